"""make demo: the forecast beside what then happened, one row per step.

Reads `pas bus tail 'replay.demo.pas.>'` lines (`subject payload`) on stdin:
pod samples give each step's measured demand (the sum of the pods' use, in
cores: what the forecaster forecasts); forecasts give what was expected
for that step LEAD steps earlier; decisions give the replicas and the rule.
A row is printed once the step's samples are all in."""

import json
import sys
from datetime import datetime, timedelta

LEAD = int(sys.argv[1]) if len(sys.argv) > 1 else 3  # steps ahead: start-up + one tick


def when(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


steps = {}       # step start -> {pod: (used, requested)}
expected = {}    # step start -> (value, upper) forecast LEAD steps before
decisions = {}   # step start -> the last decision in it
step = None
printed = set()
errors = []


def key(t):
    seconds = int(step.total_seconds())
    return datetime.fromtimestamp(int(t.timestamp()) // seconds * seconds, t.tzinfo)


def row(s):
    pods = steps.get(s, {})
    actual = sum(u for u, _ in pods.values()) / 1000 if pods else None
    f = expected.get(s)
    d = decisions.get(s)
    if f is None and d is None:
        return
    if f is not None and actual is not None:
        errors.append(abs(f[0] - actual))
    cell = lambda v: "     -" if v is None else "%6.2f" % v
    decision = ""
    if d is not None:
        peak = d.get("predicted_peak_millicores")
        peak = None if peak is None else peak / 1000
        decision = "%2d -> %2d  %-8s %-13s peak %s" % (
            d["replicas_before"], d["replicas_after"], d["outcome"], d["rule"], cell(peak).strip())
    print("    %s  %s  %s  %s    %s" % (
        s.strftime("%H:%M:%S"), cell(actual), cell(None if f is None else f[0]),
        cell(None if f is None else f[1]), decision), flush=True)


print("    A row per step: the demand measured in it (cores: the pods' use together), what the served model")
print("    forecast for it %d steps before (the lead time: a pod's 10 s start-up plus one tick), with its upper" % LEAD)
print("    quantile, and the scaler's decision in that step. peak = the highest demand the forecast expects")
print("    over the lead time: the predictive rule plans ceil(peak / (target x request)) replicas.")
print("    step        actual  forecast   upper     replicas outcome  rule          peak", flush=True)
for line in sys.stdin:
    subject, _, payload = line.partition(" ")
    try:
        m = json.loads(payload)
    except ValueError:
        continue
    if ".forecast." in subject:
        step = timedelta(seconds=m["step_seconds"])
        if len(m["values"]) >= LEAD:
            target = key(when(m["window_end"])) + LEAD * step
            upper = m.get("upper") or m["values"]
            expected[target] = (m["values"][LEAD - 1] / 1000, upper[LEAD - 1] / 1000)
    elif ".scale." in subject and step is not None:
        decisions[key(when(m["timestamp"]))] = m
    elif ".cpu.pod." in subject and step is not None and m.get("cpu_requested_millicores"):
        s = key(when(m["timestamp"]))
        steps.setdefault(s, {})[m["pod"]] = (m["cpu_used_millicores"], m["cpu_requested_millicores"])
        # A step is complete once samples two steps later arrive.
        for done in sorted(k for k in steps if k + 2 * step <= s and k not in printed):
            printed.add(done)
            row(done)
if errors:
    print("    mean absolute error of the forecast %d steps ahead: %.2f cores over %d steps"
          % (LEAD, sum(errors) / len(errors), len(errors)), flush=True)
