"""Example features against values computed by hand (plain Python formulas) on small inputs."""

from __future__ import annotations

import math
import statistics
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from spark_features.errors import DefinitionError
from spark_features.features import ALL_FEATURES, get_features
from spark_features.features.bars import BAR_SCHEMA, generate_bars, multi_timeframe, resample
from spark_features.features.technical import compute_range, compute_returns, compute_trend, compute_volume

T0 = datetime(2024, 3, 1, tzinfo=UTC)
CLOSES = [100.0, 102.0, 101.0, 105.0, 104.0, 104.0]
HIGHS = [101.0, 103.0, 102.5, 106.0, 105.5, 104.5]
LOWS = [99.0, 100.5, 100.0, 101.5, 103.0, 103.5]
VOLUMES = [10.0, 20.0, 30.0, 10.0, 50.0, 20.0]


def bars(spark: SparkSession) -> DataFrame:
    rows = [
        ("AAA", "1m", T0 + timedelta(minutes=i), CLOSES[i], HIGHS[i], LOWS[i], CLOSES[i], VOLUMES[i])
        for i in range(len(CLOSES))
    ]
    # a second symbol interleaved in time must not leak into AAA's windows
    rows += [("BBB", "1m", T0 + timedelta(minutes=i), 1.0, 1.0, 1.0, 1.0, 1.0) for i in range(len(CLOSES))]
    return spark.createDataFrame(rows, BAR_SCHEMA)


def aaa(df: DataFrame, column: str) -> list[float | None]:
    rows = df.filter(F.col("symbol") == "AAA").orderBy("event_timestamp").collect()
    assert [r.event_timestamp.replace(tzinfo=None) for r in rows] == [
        (T0 + timedelta(minutes=i + 1)).replace(tzinfo=None) for i in range(len(CLOSES))
    ], "features are stamped at bar close"
    return [r[column] for r in rows]


def close_to(actual: list[float | None], expected: list[float | None]) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert (a is None and e is None) or (a is not None and e is not None and math.isclose(a, e, rel_tol=1e-12))


def test_log_return_and_volatility(spark: SparkSession) -> None:
    out = compute_returns(bars(spark), window=3)
    returns = [None] + [math.log(CLOSES[i] / CLOSES[i - 1]) for i in range(1, 6)]
    close_to(aaa(out, "log_return"), returns)
    vol = [None, None, None] + [statistics.stdev(returns[i - 2 : i + 1]) for i in range(3, 6)]  # type: ignore[arg-type]
    close_to(aaa(out, "volatility_3"), vol)


def test_sma_distance_and_rsi(spark: SparkSession) -> None:
    out = compute_trend(bars(spark), sma_window=3, rsi_window=2)
    sma = [None, None] + [CLOSES[i] / (sum(CLOSES[i - 2 : i + 1]) / 3) - 1 for i in range(2, 6)]
    close_to(aaa(out, "sma_distance_3"), sma)
    changes = [CLOSES[i] - CLOSES[i - 1] for i in range(1, 6)]  # +2, -1, +4, -1, 0

    def rsi(window: list[float]) -> float:
        gain = sum(max(c, 0) for c in window) / 2
        loss = sum(max(-c, 0) for c in window) / 2
        return 100.0 if loss == 0 else 100 - 100 / (1 + gain / loss)

    close_to(aaa(out, "rsi_2"), [None, None] + [rsi(changes[i - 2 : i]) for i in range(2, 6)])
    assert aaa(out, "rsi_2")[2] == pytest.approx(100 - 100 / (1 + 1.0 / 0.5))  # gains (2+0)/2, losses (0+1)/2


def test_average_true_range(spark: SparkSession) -> None:
    out = compute_range(bars(spark), window=2)
    tr = [None] + [
        max(HIGHS[i] - LOWS[i], abs(HIGHS[i] - CLOSES[i - 1]), abs(LOWS[i] - CLOSES[i - 1])) for i in range(1, 6)
    ]
    close_to(aaa(out, "atr_2"), [None, None] + [(tr[i - 1] + tr[i]) / 2 for i in range(2, 6)])  # type: ignore[operator]
    assert tr[3] == 5.0  # high 106 - previous close 101 beats high - low (4.5)


def test_volume_zscore_and_vwap(spark: SparkSession) -> None:
    out = compute_volume(bars(spark), window=3)
    z = [None, None] + [
        (VOLUMES[i] - statistics.mean(VOLUMES[i - 2 : i + 1])) / statistics.stdev(VOLUMES[i - 2 : i + 1])
        for i in range(2, 6)
    ]
    close_to(aaa(out, "volume_zscore_3"), z)
    typical = [(HIGHS[i] + LOWS[i] + CLOSES[i]) / 3 for i in range(6)]
    vwap = [None, None] + [
        sum(typical[j] * VOLUMES[j] for j in range(i - 2, i + 1)) / sum(VOLUMES[i - 2 : i + 1]) for i in range(2, 6)
    ]
    close_to(aaa(out, "vwap_3"), vwap)
    bbb = out.filter(F.col("symbol") == "BBB").orderBy("event_timestamp").collect()
    assert [r.volume_zscore_3 for r in bbb][2:] == [0.0] * 4  # constant volume: z-score 0, not a division error


def test_resample_to_five_minutes(spark: SparkSession) -> None:
    rows = [("S", "1m", T0 + timedelta(minutes=i), 10.0 + i, 20.0 + i, 5.0 - i, 11.0 + i, 1.0 + i) for i in range(10)]
    out = resample(spark.createDataFrame(rows, BAR_SCHEMA), "5m").orderBy("event_timestamp").collect()
    assert [(r.open, r.high, r.low, r.close, r.volume) for r in out] == [
        (10.0, 24.0, 1.0, 15.0, 15.0),
        (15.0, 29.0, -4.0, 20.0, 40.0),
    ]
    assert out[1].event_timestamp.replace(tzinfo=None) == (T0 + timedelta(minutes=5)).replace(tzinfo=None)
    assert {r.timeframe for r in out} == {"5m"}


def test_generator_is_deterministic_and_plausible(spark: SparkSession) -> None:
    start, end = T0, T0 + timedelta(hours=3)
    first = generate_bars(spark, 3, start, end, seed=11)
    again = generate_bars(spark, 3, start, end, seed=11).repartition(5)
    checksum = F.sum(F.hash("symbol", "event_timestamp", "close", "volume").cast("long"))
    assert first.count() == 3 * 180
    assert first.agg(checksum).first()[0] == again.agg(checksum).first()[0]  # type: ignore[index]
    assert generate_bars(spark, 3, start, end, seed=12).agg(checksum).first() != first.agg(checksum).first()
    bad = first.filter(
        (F.col("low") > F.least("open", "close"))
        | (F.col("high") < F.greatest("open", "close"))
        | (F.col("volume") < 0)
    )
    assert bad.count() == 0
    assert multi_timeframe(first, ("1m", "5m", "1h")).groupBy("timeframe").count().count() == 3


def test_registry_and_definition_hashes() -> None:
    assert len(ALL_FEATURES) >= 4
    assert sum(len(f.view.features) for f in ALL_FEATURES) >= 5
    hashes = {f.view.definition_hash for f in ALL_FEATURES}
    assert len(hashes) == len(ALL_FEATURES)
    assert [f.name for f in get_features(["trend"])] == ["trend"]
    with pytest.raises(DefinitionError, match="unknown feature"):
        get_features(["nope"])


def test_registered_features_produce_their_declared_schema(spark: SparkSession) -> None:
    source = {"bars": multi_timeframe(generate_bars(spark, 2, T0, T0 + timedelta(hours=2)), ("1m", "5m"))}
    for feature in ALL_FEATURES:
        out = feature.run(source)
        assert out.schema.fieldNames() == feature.view.stored_schema.fieldNames()
        assert [f.dataType for f in out.schema.fields] == [f.dataType for f in feature.view.stored_schema.fields]
        assert out.select("timeframe").distinct().count() == 2
