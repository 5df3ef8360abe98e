"""
train.py's time budget as one object, TimeBudget: it fits a whole run (training, evaluations, checkpoints, the final
evaluation and the known-word check) into `seconds` of wall clock from the launch. It fixes a step count, not a clock
schedule (which would make every run unrepeatable): after plan_iters steps it measures the pace of a step and what the
rest costs, sets max_iters to the steps that fit, and prints the command that repeats the run without a budget. A
later phase (late dropout, the batch ramp) adds measured seconds to a step from its first step on. Every CHECK_EVERY
steps the plan is checked on one pace, the mean of the last PACE_WINDOW steps of the current phase (from PACE_MIN
steps into it), with a band between the two directions so that a wandering machine does not flip it back and forth:
- behind: it would end past END_LATE of the budget: cut to what fits in END_FIT, at any step;
- ahead: END_FIT holds AHEAD more steps: extended, only in the first half of the run (its schedule is young).
The log says "re-planned" either way: such a run's schedule changed midway, and it no longer repeats exactly.
"""
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

END_FIT = 0.98     # a plan fills 98% of the budget: the pace of a shared machine wanders
END_LATE = 0.99    # ... and is cut when it would end past 99% (the budget's promise is +5%)
AHEAD = 1.05       # ... and extended when 5% more steps fit
PACE_WINDOW = 200  # steps: about a minute of a CPU quick start, long enough to average out one slow interval
PACE_MIN = 50      # steps into a phase before its pace is trusted: a dozen steps after a switch are too few
CHECK_EVERY = 10   # steps between checks of a running plan (each is an all-reduce under DDP)


@dataclass
class Budget:
    """The arithmetic: a time budget of `seconds` counted from t_start (a time.time()), and what a run spends it on,
    in seconds: eval_s an evaluation during training, save_s a checkpoint write, final_s the end of the run; phases:
    (first step, seconds a step costs more than at the plan's pace from that step on), sorted, from step 0."""
    seconds: float
    t_start: float
    eval_interval: int
    eval_s: float = 0.0
    save_s: float = 0.0
    final_s: float = 0.0
    phases: list = ((0, 0.0),)

    def phase(self, it):
        """(first step, extra seconds a step) of the phase that step it runs in."""
        return [p for p in self.phases if p[0] <= it][-1]

    def cost(self, iter_num, n, step_s):
        """Seconds that steps iter_num .. iter_num + n take, evaluations and writes included, at step_s seconds a step
        in the phase of iter_num (the pace as measured there) and the phases' differences after it."""
        base = step_s - self.phase(iter_num)[1]
        ends = sorted({iter_num, iter_num + n, *(f for f, _ in self.phases if iter_num < f < iter_num + n)})
        steps = sum((b - a) * (base + self.phase(a)[1]) for a, b in zip(ends, ends[1:]))
        evals = (iter_num + n) // self.eval_interval - iter_num // self.eval_interval
        return steps + evals * (self.eval_s + 2 * self.save_s)

    def fit(self, now, iter_num, step_s):
        """The last step (an index >= iter_num) that ends by END_FIT of the budget at step_s seconds a step."""
        left = self.t_start + self.seconds * END_FIT - now - self.final_s
        cheapest = step_s - self.phase(iter_num)[1] + min(x for _, x in self.phases)  # seconds of the cheapest step
        lo, hi = 0, max(0, int(left / max(cheapest, 1e-3)) + 1)
        while lo < hi:  # bisection: the most steps whose cost fits
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if self.cost(iter_num, mid, step_s) <= left else (lo, mid - 1)
        return iter_num + lo

    def revise(self, now, iter_num, max_iters, step_s):
        """(max_iters, None) if the plan holds at step_s seconds a step, else (the new max_iters, "behind" or "ahead
        of"). Pure arithmetic: DDP ranks that pass the same (agreed) now and step_s decide the same."""
        end = now + self.cost(iter_num, max_iters - iter_num, step_s) + self.final_s
        n = self.fit(now, iter_num, step_s)
        if end > self.t_start + END_LATE * self.seconds:
            return n, "behind"
        if iter_num < max_iters // 2 and n > AHEAD * max_iters:
            return n, "ahead of"
        return max_iters, None


def pace(step_times, since):
    """The mean of step_times (seconds) over the last PACE_WINDOW of them, and none before index since (a new phase
    changes what a step costs). A mean, not a median: slow steps use the budget too."""
    recent = step_times[max(since, len(step_times) - PACE_WINDOW):]
    return float(np.mean(recent or step_times[-1:]))


def pass_seconds(model, draw, ctx, dropout_modules, it, setting):
    """Seconds of a forward + backward pass of model (train.py's raw model) on draw(it, 0, batch_size=...), step it's
    first micro-batch, in setting (dropout rate, sequences) under ctx (autocast); the RNG, the dropout rates and the
    gradients are left as they were. How a later phase of the schedule is timed (phase_costs)."""
    was = dropout_modules[0].p
    with torch.random.fork_rng():
        for m in dropout_modules:
            m.p = setting[0]
        inputs, y = draw(it, 0, batch_size=setting[1])
        t = time.time()
        with ctx:
            model(**inputs, targets=y, return_logits=False)[1].backward()
        t = time.time() - t
    for m in dropout_modules:
        m.p = was
    model.zero_grad(set_to_none=True)
    return t


def phase_costs(it, firsts, setting, pass_seconds):
    """[(first step, seconds a step costs more from there)] for each phase ahead of step it: the steps of firsts
    (math.inf for none) whose setting(step) (train.py: dropout rate and batch) differs from step it's, each timed as
    the least of 4 pass_seconds(it, setting) (a new shape warms up for 2-3) against the same of step it's setting."""
    firsts = sorted({f for f in firsts if it < f < math.inf and setting(f) != setting(it)})
    passes = {s: min(pass_seconds(it, s) for _ in range(4)) for s in [setting(it), *map(setting, firsts)]}
    return [(f, max(0.0, passes[setting(f)] - passes[setting(it)])) for f in firsts]


def measure_costs(save, evaluate, stories, phases):
    """What TimeBudget.update's measure() returns, in seconds: save() writes a checkpoint (an early one, too) and
    returns its seconds; evaluate(n) scores the first n val tokens (its span_s: an encoder-decoder evaluation's fixed
    span batches), timed per token; stories(n) samples the known-word check's stories of n tokens (None: no check),
    timed at 16 of its 256 tokens, x16, + reading train's words; phases() -> phase_costs' list."""
    save_s, t = save(), time.time()
    small = evaluate(16384)
    span_s = small.get("span_s", 0.0)
    token_s, t = (time.time() - t - span_s) / small["tokens"], time.time()
    if stories:
        stories(16)
    words_s = 16 * (time.time() - t) + 0.5 if stories else 0.0
    return save_s, token_s, span_s, words_s, phases()


class TimeBudget:
    """The planner: train.py's loop calls update() once per step, and a checkpoint records state(). agree(x,
    largest=False) gives x as every DDP rank sees it (the smallest, or the largest, over ranks), so that every rank
    plans the same; log prints on the master process."""

    def __init__(self, seconds, t_start, plan_iters, eval_interval, eval_tokens, final_tokens, start_iter, agree, log):
        self.seconds, self.t_start, self.plan_iters, self.eval_interval = seconds, t_start, plan_iters, eval_interval
        self.eval_tokens, self.final_tokens = eval_tokens, final_tokens  # val targets an evaluation scores
        self.start_iter, self.agree, self.log = start_iter, agree, log
        self.plan, self.planned_at = None, None  # the Budget and its step, once planned

    def update(self, iter_num, step_times, max_iters, measure):
        """The max_iters to run after step iter_num - 1. step_times: the seconds of each step of this process, from
        start_iter. plan_iters steps in: plans, from the mean step of their second half (the first steps warm the
        allocator up) and measure() -> (save_s, token_s, span_s, words_s, phases): the seconds of a checkpoint write,
        of an evaluated token, of an evaluation's fixed part, of the known-word check, and [(first step, seconds a step
        costs more)] for the phases ahead. An evaluation during training scores eval_tokens of val and as many of
        train; the final one final_tokens and eval_tokens, then a write and the known-word check. From then on, every
        CHECK_EVERY steps: cuts or extends the plan (Budget.revise)."""
        if self.plan is None:
            if iter_num - self.start_iter < self.plan_iters:
                return max_iters
            step_s = self.agree(pace(step_times, since=len(step_times) // 2), largest=True)
            save_s, token_s, span_s, words_s, phases = measure()
            eval_s = token_s * 2 * self.eval_tokens + 2 * span_s
            final_s = token_s * (self.final_tokens + self.eval_tokens) + 2 * span_s + save_s + words_s
            phases = [[0, 0.0]] + [[f, self.agree(x, largest=True)] for f, x in phases]  # lists: plain data
            self.plan = Budget(self.seconds, self.t_start, self.eval_interval, eval_s, save_s, final_s, phases)
            now = time.time()
            self.planned_at, n = iter_num, int(self.agree(self.plan.fit(now, iter_num, step_s)))
            if n == iter_num:  # not one more step fits: end now, and say what budget would have worked
                need = 10 * math.ceil((now - self.t_start + final_s + PACE_MIN * step_s) / END_FIT / 10)
                self.log(f"warning: time_budget={self.seconds:g} s is too short here: start-up and {iter_num} steps "
                         f"took {now - self.t_start:.0f} s and the end needs ~{final_s:.0f} s; the smallest budget "
                         f"that works on this machine is ~{need} s. Ending now, at step {iter_num}")
                return n
            later = "".join(f", +{1000 * x:.0f} ms from step {f}" for f, x in phases[1:])  # dropout, the batch ramp
            self.log(f"time_budget {self.seconds:.0f} s: {step_s * 1000:.0f} ms/step{later}, evaluations {eval_s:.1f} "
                     f"s, writes {save_s:.1f} s, final evaluation ~{final_s:.0f} s -> max_iters = lr_decay_iters = {n} "
                     f"(repeat with --time_budget=0 --max_iters={n} --lr_decay_iters={n})")
            return n
        since = max(self.planned_at, self.plan.phase(iter_num - 1)[0])  # the pace of this phase, since the plan
        if iter_num % CHECK_EVERY or iter_num >= max_iters or iter_num - since < PACE_MIN:
            return max_iters
        now = self.agree(time.time(), largest=True)
        step_s = self.agree(pace(step_times, since - self.start_iter), largest=True)
        n, why = self.plan.revise(now, iter_num, max_iters, step_s)
        if why:
            self.log(f"re-planned, {why} the plan ({1000 * step_s:.0f} ms/step): max_iters = lr_decay_iters "
                     f"{max_iters} -> {n}")
        return n

    def state(self):
        """Plain data for the checkpoint: the plan's arithmetic and the step it was made at (None before it)."""
        return None if self.plan is None else {"planned_at": self.planned_at, **asdict(self.plan)}
