"""
The sums behind train.py's time_budget: how many optimizer steps fit in what is left of a wall-clock budget, and
when a running plan must change.

The plan is a step count, not a clock schedule (train.py's docstring says why), so all this module decides is
max_iters (= lr_decay_iters). It knows what a run spends its seconds on: steps, an evaluation and two checkpoint
writes every eval_interval steps, then the final evaluation, write and known-word check. A step costs more in later
phases of a run (late dropout's random masks, the batch ramp's larger batches): each phase is a first step and the
seconds a step costs on top of the plan's pace from there on. A running plan is checked on one pace, the mean step of
the last PACE_WINDOW steps of the current phase (from PACE_MIN steps into it), for both directions, with a band between
them so that a wandering machine does not flip the plan back and forth:
- behind: the plan would end past END_LATE of the budget. It is cut to what fits in END_FIT, at any step;
- ahead: END_FIT holds AHEAD more steps than the plan. It is extended, but only in the first half of a run, while
  its learning-rate schedule is young.
"""
from dataclasses import dataclass

import numpy as np

END_FIT = 0.98     # a plan fills 98% of the budget: the pace of a shared machine wanders
END_LATE = 0.99    # ... and is cut when it would end past 99% (the budget's promise is +5%)
AHEAD = 1.05       # ... and extended when 5% more steps fit
PACE_WINDOW = 200  # steps: about a minute of a CPU quick start, long enough to average out one slow interval
PACE_MIN = 50      # steps into a phase before its pace is trusted: a dozen steps after a switch are too few


@dataclass
class Budget:
    """A time budget of `seconds` counted from t_start (a time.time()), and what a run spends it on, in seconds:
    eval_s an evaluation during training, save_s a checkpoint write, final_s the end of the run; phases: (first step,
    seconds a step costs more than at the plan's pace from that step on), sorted, from step 0."""
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
