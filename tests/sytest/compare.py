#!/usr/bin/env python3
"""Compare a SyTest run behind timproxy with the plain-Synapse baseline.

usage:
  compare.py RESULT.tap                 check RESULT.tap against plain-passes.txt and
                                        expected-failures.txt (both next to this script)
  compare.py --plain PLAIN.tap RESULT.tap
                                        the same against a plain run instead of the baseline
  compare.py --shadowed RULE,… RESULT.tap
                                        RESULT.tap ran with these rules in policy.shadow: their
                                        expected failures must pass now
  compare.py --partial RESULT.tap       RESULT.tap ran part of the suite (small, subset): tests
                                        and list entries outside it are not compared
  compare.py --baseline PLAIN.tap       print a new plain-passes.txt from a plain run

A test that passes plain and not behind timproxy must be listed in expected-failures.txt with
the TIM rule that refuses it; anything else is an unexplained difference (exit 1). A listed test
that passes behind timproxy, or that is not in the run, makes the list wrong (exit 1 too), so
an entry cannot hide a failure of another kind. Tests are named as SyTest names them; the second
test of the same name is "NAME #2".

The one exception: an entry whose reason starts with `follow-on:` names a test the rule does not
refuse itself. An earlier test that the rule refused left SyTest in a state that fails it (a
handler of its fake push gateway or application service still registered, or never started);
whether it fails then depends on SyTest's timeouts, so it may pass, and is reported when it does.
With the rule shadowed it must pass like the others.
"""
import argparse
import re
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
RULES_TSV = HERE.parent.parent / "src" / "policy" / "rules.tsv"
PASSING = {"pass", "xpass"}


def read_tap(path):
    """TAP of run-tests.pl -O tap -> {test: status}, in file order."""
    results, seen = {}, Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        m = re.match(r"^(ok|not ok) \d+ (.*)$", line.rstrip("\n"))
        if not m:
            continue
        ok, rest = m.group(1) == "ok", m.group(2)
        if " # skip " in rest:
            name, status = rest.split(" # skip ", 1)[0], "skip"
        elif rest.endswith(" # TODO expected fail"):
            name, status = rest[: -len(" # TODO expected fail")], "xfail"
        elif rest.endswith(" # TODO passed but expected fail"):
            name, status = rest[: -len(" # TODO passed but expected fail")], "xpass"
        else:
            name, status = rest, "pass" if ok else "fail"
        name = re.sub(r" \(\d+ subtests\)$", "", name.replace("(expected fail) ", "", 1))
        seen[name] += 1
        results[name if seen[name] == 1 else f"{name} #{seen[name]}"] = status
    return results


def read_list(path):
    """Non-comment lines of a text file, with their line numbers."""
    for number, line in enumerate(open(path, encoding="utf-8"), 1):
        if line.strip() and not line.startswith("#"):
            yield number, line.rstrip("\n")


def read_rules():
    """Rule ids a test may be expected to fail by: TIM rules and federation-boundary rules of
    the rule registry (request errors such as unknown-endpoint are no reason)."""
    rules = {}
    for _, line in read_list(RULES_TSV):
        cols = line.split("\t")
        if cols[0] != "rule":
            rules[cols[0]] = cols[1]
    return {rule for rule, kind in rules.items() if kind in ("tim", "boundary")}


FOLLOW_ON = "follow-on:"


def read_expected(path, problems, follow_ons):
    """expected-failures.txt: `RULE | test name | why` -> {test: rule}; the names of follow-on
    entries (why starts with `follow-on:`) are added to `follow_ons`."""
    rules, expected = read_rules(), {}
    for number, line in read_list(path):
        parts = line.split(" | ")
        where = f"{path.name}:{number}"
        if len(parts) < 3 or not parts[-1].strip():
            problems.append(f"{where}: expected `RULE | test name | why`")
            continue
        rule, name = parts[0].strip(), " | ".join(parts[1:-1])
        if rule not in rules:
            problems.append(f"{where}: `{rule}` is no TIM rule id of src/policy/rules.tsv")
        if name in expected:
            problems.append(f"{where}: `{name}` is listed twice")
        expected[name] = rule
        if parts[-1].strip().startswith(FOLLOW_ON):
            follow_ons.add(name)
    return expected


def counts(results):
    c = Counter(results.values())
    return ", ".join(f"{k} {c[k]}" for k in ("pass", "xpass", "fail", "skip", "xfail") if c[k])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plain", help="plain run to compare with instead of plain-passes.txt")
    ap.add_argument("--shadowed", default="", help="comma-separated rules shadowed in RESULT")
    ap.add_argument("--partial", action="store_true", help="RESULT ran part of the suite")
    ap.add_argument("--baseline", help="print plain-passes.txt from this plain run and exit")
    ap.add_argument("result", nargs="?")
    args = ap.parse_args()

    if args.baseline:
        for name, status in read_tap(args.baseline).items():
            if status in PASSING:
                print(name)
        return 0
    if not args.result:
        ap.error("RESULT.tap is required")

    problems = []
    if args.plain:
        plain = read_tap(args.plain)
        plain_passes = [n for n, s in plain.items() if s in PASSING]
        print(f"plain    {args.plain}: total {len(plain)}: {counts(plain)}")
    else:
        plain_passes = [line for _, line in read_list(HERE / "plain-passes.txt")]
        print(f"plain    plain-passes.txt: {len(plain_passes)} tests pass on plain Synapse")
    result = read_tap(args.result)
    print(f"timproxy {args.result}: total {len(result)}: {counts(result)}")
    follow_ons = set()
    expected = read_expected(HERE / "expected-failures.txt", problems, follow_ons)
    shadowed = {r for r in args.shadowed.split(",") if r}
    if args.partial:
        plain_passes = [n for n in plain_passes if n in result]
        expected = {n: r for n, r in expected.items() if n in result}

    lost = [n for n in plain_passes if result.get(n) not in PASSING]
    unexplained = [n for n in lost if n not in expected or expected[n] in shadowed]
    by_rule = Counter(expected[n] for n in lost if n in expected and expected[n] not in shadowed)
    passed_follow_ons = []
    for name, rule in expected.items():
        if name not in result:
            problems.append(f"expected-failures.txt: `{name}` is not in this run")
        elif name not in plain_passes and not args.plain:
            problems.append(f"expected-failures.txt: `{name}` does not pass plain (plain-passes.txt)")
        elif result[name] in PASSING and rule not in shadowed:
            if name in follow_ons:
                passed_follow_ons.append(name)
            else:
                problems.append(f"expected-failures.txt: `{name}` passes behind timproxy ({rule} does not refuse it)")

    print(f"passing plain, not behind timproxy: {len(lost)}: "
          f"{len(lost) - len(unexplained)} expected, {len(unexplained)} unexplained")
    for rule, n in sorted(by_rule.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {n:4d}  {rule}")
    for name in passed_follow_ons:
        print(f"follow-on passed this time: {name}")
    for name in unexplained:
        print(f"UNEXPLAINED {result.get(name, 'missing'):5s} {name}")
    for problem in problems:
        print(f"LIST ERROR  {problem}")
    return 1 if unexplained or problems else 0


if __name__ == "__main__":
    sys.exit(main())
