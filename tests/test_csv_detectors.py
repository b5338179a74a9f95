"""The detectors ``detect --csv`` adds for arbitrary series: a long-memory context, a profile of the
same time on earlier days (and what recurs at about that time every day), and a baseline that judges
nothing until it knows the series' tail; and how their regions are told (bursts close together as
one)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

from shoppulse.sidecar.csv_detect import Row, detect, region_tracker, series_detector
from shoppulse.sidecar.detectors import (
    CALIBRATE_AFTER,
    CONTEXT_MIN_POINTS,
    CONTEXT_STRETCH,
    LEVEL,
    RECORD_MIN_POINTS,
    WARM_UP_POINTS,
    ContextZ,
    HalfSpaceTreesDetector,
    Opinion,
    Point,
    RecordDetector,
    RobustZ,
    SeasonalProfileZ,
    Verdict,
)


def level(value: float) -> Point:
    return Point(value, 0.0, "level")


def test_a_shift_the_baseline_adopts_stays_unusual_against_the_context() -> None:
    """A level shift of 15 sigma that lasts, run through detect's detectors: the baseline creeps toward
    it (an anomaly teaches it a little) until its z no longer tells it; the context, which learns usual
    points only, still does for a while — and then it too adopts the new level as the normal."""
    rng = random.Random(5)
    detector, tracker = series_detector(), region_tracker()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    seen = []  # after the shift: the baseline's |z| and the context's surprise
    for index in range(1400):
        value = rng.gauss(100, 2) + (30 if index >= 800 else 0)
        verdict = detector.step(level(value), tracker.is_open)
        tracker.step(start + timedelta(minutes=5 * index), value, verdict)
        surprise = next(o.surprise for o in verdict.opinions if o.detector == "context_z")
        if index >= 800:
            seen.append((abs(verdict.z), surprise))
    assert any(z < 2 and surprise > 4 for z, surprise in seen)
    assert all(z < 4 and surprise < 4 for z, surprise in seen[-50:])
    assert not tracker.is_open


def test_the_context_says_nothing_before_it_has_seen_enough_and_any_change_of_a_flat_one_is_news() -> None:
    context = ContextZ()
    for _ in range(CONTEXT_MIN_POINTS - 1):
        context.learn_one(level(7.0))
    assert context.score_one(level(70.0)).unusual is None
    context.learn_one(level(7.0))
    assert context.score_one(level(7.0)).surprise == 0.0
    assert context.score_one(level(7.5)).surprise == abs(context.z(7.5) or 0) / CONTEXT_STRETCH
    assert context.score_one(level(7.5)).unusual
    anomalous = Point(70.0, 0.0, "level", anomalous=True)
    context.learn_one(anomalous)  # inside a region: not part of the context
    assert context.score_one(level(7.0)).surprise == 0.0


def test_the_context_of_a_timed_series_says_nothing_before_it_spans_a_day() -> None:
    """Five-minute points: enough of them after about eight hours, but the evening is not news against
    the afternoon until the context has seen a whole day."""
    context = ContextZ()
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    for index in range(288):
        context.learn_one(Point(7.0 + 0.1 * (index % 2), 0.0, "level", at=start + 300 * index))
    assert len(context.context.window) > CONTEXT_MIN_POINTS
    assert context.score_one(Point(70.0, 0.0, "level", at=start + 300 * 287)).unusual is None
    assert context.score_one(Point(70.0, 0.0, "level", at=start + 300 * 288)).unusual


def test_a_self_calibrating_baseline_judges_nothing_until_it_knows_the_tail() -> None:
    """A series whose spikes are its usual: before its tail is known, the first spikes would read as
    anomalies one after another; after, the same spike is no longer rare for it."""
    rng = random.Random(8)
    baseline = RobustZ(alpha=0.05, self_calibrating=True)
    spike_z = []
    for index in range(WARM_UP_POINTS + CALIBRATE_AFTER + 400):
        value = rng.gauss(10, 1) + (30 if index % 50 == 0 else 0)
        point = level(value)
        if index % 50 == 0:
            spike_z.append((index, baseline.z(point)))
        baseline.calibrate_one(point)
        baseline.learn_one(point)
    before = [z for index, z in spike_z if index < WARM_UP_POINTS + CALIBRATE_AFTER]
    after = [z for index, z in spike_z if index > WARM_UP_POINTS + CALIBRATE_AFTER + 50]
    assert before and all(z == 0.0 for z in before)
    assert after and all(0 < z < 8 for z in after)
    plain = RobustZ(alpha=0.05)  # the store's metrics: judged from the warm-up on
    for _ in range(WARM_UP_POINTS):
        plain.learn_one(level(rng.gauss(10, 1)))
    assert plain.z(level(40.0)) > 8


def test_half_space_trees_only_scores_where_it_does_not_corroborate() -> None:
    rng = random.Random(3)
    quiet, corroborating = (HalfSpaceTreesDetector(seed=3, corroborates=flag) for flag in (False, True))
    for _ in range(300):
        point = Point(rng.gauss(1, 0.1), 0.0, "level", previous=1.0)
        quiet.learn_one(point)
        corroborating.learn_one(point)
    far = Point(5.0, 0.0, "level", previous=1.0)
    assert quiet.score_one(far).score == corroborating.score_one(far).score >= 0.7
    assert corroborating.score_one(far).unusual and quiet.score_one(far).unusual is None


def test_the_context_learns_how_far_a_bursty_series_reaches_and_stops_calling_its_bursts_news() -> None:
    """A series whose bursts are its usual: once the context has seen CALIBRATE_AFTER points outside a
    region, the stretch is its own tail's, wider than the fixed one, and a usual burst no longer opens."""
    rng = random.Random(2)
    context = ContextZ()
    burst = 0.0
    for index in range(CONTEXT_MIN_POINTS + CALIBRATE_AFTER + 200):
        value = rng.gauss(100, 2) + (rng.choice((25.0, 30.0, 35.0)) if index % 100 == 50 else 0.0)
        if index == CONTEXT_MIN_POINTS:
            burst = context.score_one(level(135.0)).surprise
        context.learn_one(level(value))
    assert context.stretch() > CONTEXT_STRETCH
    assert burst >= 4 > context.score_one(level(135.0)).surprise


def rhythm(index: int, rng: random.Random) -> float:
    """A day of 288 five-minute points: quiet nights, busy days."""
    return 100 + 60 * math.sin(2 * math.pi * index / 288) + rng.gauss(0, 3)


def test_a_value_usual_overall_but_not_at_this_time_of_day_is_found_and_the_daily_peak_is_not() -> None:
    """Ten days of a daily rhythm; on the eighth the afternoon stays at the night's level for two hours.
    No single value is out of the series' range, so only the profile of the same time on earlier days
    tells it; and the daily peaks, which a short-memory baseline would see rise every day, open nothing."""
    rng = random.Random(4)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    rows = []
    for index in range(10 * 288):
        value = rhythm(index, rng)
        lost = 7 * 288 + 60 <= index < 7 * 288 + 84
        rows.append(Row(index + 2, start + timedelta(minutes=5 * index), 45.0 + rng.gauss(0, 3) if lost else value,
                        int(lost)))
    scored = list(detect(rows))
    openings = [i for i, s in enumerate(scored) if s.anomaly and (i == 0 or not scored[i - 1].anomaly)]
    late = [i for i in openings if i >= 3 * 288 + 60]  # the profile speaks once it has three days
    assert [i for i in late if 7 * 288 + 60 <= i < 7 * 288 + 84] and len(late) == 1, late
    profile = next(d for d in series_detector().detectors if isinstance(d, SeasonalProfileZ))
    for index in range(5 * 288):
        value = rhythm(index, rng)
        profile.learn_one(Point(value, 0.0, "level", at=(start + timedelta(minutes=5 * index)).timestamp()))
    noon = (start + timedelta(days=5, hours=6)).timestamp()  # the peak of the day
    assert profile.score_one(Point(160.0, 0.0, "level", at=noon)).unusual is False
    assert profile.score_one(Point(100.0, 0.0, "level", at=noon)).unusual is True


def test_bursts_close_together_are_one_region_and_far_apart_two() -> None:
    """Spikes 40 points apart flag one run, the calm points between them included; a third 400 points
    later opens a region of its own."""
    rng = random.Random(9)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    spikes = {1000, 1040, 1440}
    rows = [Row(i + 2, start + timedelta(minutes=i), rng.gauss(50, 1) + (40 if i in spikes else 0), None)
            for i in range(1700)]
    flags = [s.anomaly for s in detect(rows)]
    assert len(flags) == len(rows)
    openings = [i for i in range(1, len(flags)) if flags[i] and not flags[i - 1]]
    assert openings == [1000, 1440]
    assert all(flags[1000:1041])


def test_one_point_far_beyond_the_context_opens_a_region_before_the_baseline_knows_its_tail() -> None:
    """The baseline is still calibrating at point 300; a value thirty times the usual opens a region at
    once on the context's word alone."""
    rng = random.Random(1)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [Row(i + 2, start + timedelta(hours=1) * i, (60.0 if i == 300 else rng.gauss(2, 0.2)), None)
            for i in range(400)]
    flags = [s.anomaly for s in detect(rows)]
    assert [i for i in range(1, len(flags)) if flags[i] and not flags[i - 1]] == [300]


def nightly_job(spikes: dict[int, float], days: int = 8) -> list[Row]:
    """Five-minute points near 10 with a job that writes 40 for ten minutes at 02:00 give or take half an
    hour (a different time each night), and ``spikes``: point -> value."""
    rng = random.Random(3)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    job = {day * 288 + 24 + rng.randint(-6, 6) for day in range(days)}
    return [Row(i + 2, start + timedelta(minutes=5 * i),
                spikes.get(i, 40.0 if i in job or i - 1 in job else rng.gauss(10, 0.3)), None)
            for i in range(days * 288)]


def test_a_nightly_job_is_the_usual_once_it_has_run_three_nights_and_anything_else_is_not() -> None:
    """The job's spikes are a hundred of the series' deviations high: news the first nights, then what
    the series does at that time — whatever the baseline says. The job's ten minutes at noon, or a
    spike three times the job's at its time, still opens a region."""
    noon, bigger = 6 * 288 + 144, 7 * 288 + 20
    rows = nightly_job({noon: 40.0, noon + 1: 40.0, bigger: 120.0})
    flags = [s.anomaly for s in detect(rows)]
    openings = [i for i in range(1, len(flags)) if flags[i] and not flags[i - 1]]
    assert [i for i in openings if i >= 4 * 288] == [noon + 1, bigger], openings  # a second strong step
    assert any(288 <= i < 4 * 288 for i in openings)  # its first nights were news


def test_what_recurs_every_day_vetoes_even_overwhelming_evidence_and_nothing_else_does() -> None:
    profile = SeasonalProfileZ()
    for row in nightly_job({}, days=4):
        profile.learn_one(Point(row.value or 0.0, 0.0, "level", at=row.timestamp.timestamp()))
    night = datetime(2026, 1, 9, 2, 20, tzinfo=UTC).timestamp()
    assert profile.score_one(Point(40.0, 0.0, "level", at=night, expected=10.0)).firm
    assert not profile.score_one(Point(40.0, 0.0, "level", at=night + 3 * 3600, expected=10.0)).firm
    assert not profile.score_one(Point(120.0, 0.0, "level", at=night, expected=10.0)).firm
    assert not profile.score_one(Point(40.0, 0.0, "level", at=night)).firm  # no baseline to measure the way from
    strong = Verdict(20.0, 1.0, 10.0, True, (Opinion("robust_z", 1.0, True, 20.0),))
    for firm, opens in ((True, False), (False, True)):
        veto = Opinion("seasonal_profile", 0.0, False, firm=firm)
        tracker = region_tracker()
        change = tracker.step(datetime(2026, 1, 9, tzinfo=UTC), 40.0,
                              Verdict(strong.z, strong.score, strong.expected, True, (*strong.opinions, veto)))
        assert (change is not None) is opens


def test_a_record_is_a_value_beyond_every_usual_one_of_the_latest_points() -> None:
    record = RecordDetector(points=1000)
    for index in range(RECORD_MIN_POINTS - 1):
        record.learn_one(level(10.0 + index % 7))
    assert record.score_one(level(99.0)).unusual is None  # too few points to know the range
    record.learn_one(level(10.0))
    assert record.score_one(level(16.5)).unusual is True and record.score_one(level(9.5)).unusual is True
    assert record.score_one(level(16.0)).unusual is None and record.score_one(level(10.0)).unusual is None
    record.learn_one(level(50.0), weight=0.0)  # inside a region: not part of the range
    assert record.score_one(level(30.0)).unusual is True
    record.learn_one(level(30.0))
    for _ in range(999):
        record.learn_one(level(12.0))
    assert record.score_one(level(30.0)).unusual is None and record.score_one(level(20.0)).unusual is None
    record.learn_one(level(12.0))  # the 30 leaves the window
    assert record.score_one(level(20.0)).unusual is True


def test_a_first_strong_step_opens_only_with_evidence_of_another_kind_than_the_level() -> None:
    """Two detectors that both measure how far the value is from a level agreeing are one piece of
    evidence: a second strong step is needed. A record (or the time of day) beside them opens at once."""
    def first_step(*others: Opinion) -> bool:
        level_opinions = (Opinion("robust_z", 0.6, True, 5.0, evidence=LEVEL),
                          Opinion("context_z", 0.6, True, 5.0, evidence=LEVEL))
        verdict = Verdict(5.0, 0.6, 10.0, True, (*level_opinions, *others))
        return region_tracker().step(datetime(2026, 1, 9, tzinfo=UTC), 40.0, verdict) is not None

    assert not first_step()
    assert first_step(Opinion("record", 1.0, True))
    assert first_step(Opinion("seasonal_profile", 0.7, True, 5.5))
    assert not first_step(Opinion("record", 0.0, None))
