"""bench.shaped's report: each case, setting and tool stands for its median round."""

from __future__ import annotations

from bench.shaped import Measure, estimate_lines, medians, spread_lines, table


def run(tool: str, seconds: float, round_: int, problem: str | None = None) -> Measure:
    return Measure("users", "wan", tool, 100, 3000, 133_000_000, seconds, 90.0, 0, 3.0, 0.8,
                   0, 10.0, problem, round_)


def test_the_median_round_stands_for_its_tool_and_the_ratio_is_of_medians():
    measures = [run("multiappend", 7.0, 1), run("bascule", 9.0, 1),
                run("multiappend", 6.0, 2), run("bascule", 7.5, 2),
                run("multiappend", 8.0, 3), run("bascule", 8.0, 3)]
    chosen = {m.tool: (m.seconds, seconds) for m, seconds in medians(measures)}
    assert chosen == {"multiappend": (7.0, [7.0, 6.0, 8.0]), "bascule": (8.0, [9.0, 7.5, 8.0])}
    bascule_line = table(measures).splitlines()[-1]
    assert "| 8.0 | 9.0 7.5 8.0 |" in bascule_line
    assert bascule_line.endswith("|  | 0.88 |")


def test_a_failed_round_is_shown_not_hidden_by_the_others():
    measures = [run("bascule", 8.0, 1), run("bascule", 1.0, 2, problem="exit code 1"),
                run("bascule", 9.0, 3)]
    [(m, seconds)] = medians(measures)
    assert m.problem == "exit code 1" and seconds == [8.0, 1.0, 9.0]
    assert "| failed |" in table(measures)


def test_each_tools_rounds_spread_and_the_estimates_within_their_bound_are_counted():
    measures = [run("multiappend", 2.0, 1), run("multiappend", 4.6, 2),
                run("multiappend", 4.4, 3), run("bascule", 5.0, 1)]
    assert spread_lines(measures) == [
        "wan: users, multiappend: rounds 2.0 to 4.6 s (slowest / quickest 2.30)"]
    estimates = [{"basis": {"kind": "probe"}, "ratio": r} for r in (0.7, 1.3, 1.31, 0.69)]
    estimates.append({"basis": {"kind": "history"}, "ratio": 1.05})
    assert estimate_lines(estimates) == [
        ("plan estimates from history: 1 of 1 within ±30% of their runs "
         "(estimate / run 1.05 to 1.05)"),
        ("plan estimates from probe: 2 of 4 within ±30% of their runs "
         "(estimate / run 0.69 to 1.31)")]
