"""Example technical features on bars, keyed by (symbol, timeframe), stamped at bar close.

Every rolling statistic uses a fixed window of the last ``n`` bars and is null until ``n`` bars
exist, so a range computed with ``lookback`` bars of history equals the same range computed from
all history. (That is why RSI here is Cutler's simple-average RSI and not Wilder's recursive one.)
"""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import Column, DataFrame, Window, WindowSpec
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, StringType, StructField, StructType

from spark_features.features.bars import bar_close
from spark_features.features.base import BaseFeature, FeatureView

KEYS = ("symbol", "timeframe")
KEY_TYPES = StructType([StructField("symbol", StringType(), False), StructField("timeframe", StringType(), False)])


def _series() -> WindowSpec:
    return Window.partitionBy(*KEYS).orderBy("event_timestamp")


def _last(n: int) -> WindowSpec:
    return _series().rowsBetween(-(n - 1), Window.currentRow)


def _full(value: Column, n: int) -> Column:
    """``value`` where the window holds ``n`` bars, else null."""
    return F.when(F.count(F.lit(1)).over(_last(n)) == n, value)


def _finish(bars: DataFrame, *features: Column) -> DataFrame:
    return bars.select(*KEYS, bar_close().alias("event_timestamp"), *features)


def _doubles(*names: str) -> StructType:
    return StructType([StructField(name, DoubleType(), True) for name in names])


def compute_returns(bars: DataFrame, window: int) -> DataFrame:
    log_return = F.log(F.col("close") / F.lag("close").over(_series()))
    with_return = bars.withColumn("log_return", log_return)
    # the first bar has no return, so ``window`` returns need ``window + 1`` bars
    full = F.count("log_return").over(_last(window)) == window
    volatility = F.when(full, F.stddev_samp("log_return").over(_last(window)))
    return _finish(with_return, F.col("log_return"), volatility.alias(f"volatility_{window}"))


def compute_trend(bars: DataFrame, sma_window: int, rsi_window: int) -> DataFrame:
    change = F.col("close") - F.lag("close").over(_series())
    with_change = bars.withColumn("change", change)
    gains = F.avg(F.greatest(F.col("change"), F.lit(0.0))).over(_last(rsi_window))
    losses = F.avg(F.greatest(-F.col("change"), F.lit(0.0))).over(_last(rsi_window))
    full_changes = F.count("change").over(_last(rsi_window)) == rsi_window
    rsi = F.when(losses == 0, F.lit(100.0)).otherwise(F.lit(100.0) - F.lit(100.0) / (F.lit(1.0) + gains / losses))
    sma = F.avg("close").over(_last(sma_window))
    return _finish(
        with_change,
        _full(F.col("close") / sma - F.lit(1.0), sma_window).alias(f"sma_distance_{sma_window}"),
        F.when(full_changes, rsi).alias(f"rsi_{rsi_window}"),
    )


def compute_range(bars: DataFrame, window: int) -> DataFrame:
    prev_close = F.lag("close").over(_series())
    # F.greatest skips nulls, so the first bar (no previous close) must be null explicitly
    true_range = F.when(
        prev_close.isNotNull(),
        F.greatest(F.col("high") - F.col("low"), F.abs(F.col("high") - prev_close), F.abs(F.col("low") - prev_close)),
    )
    with_tr = bars.withColumn("true_range", true_range)
    atr = F.avg("true_range").over(_last(window))
    return _finish(with_tr, F.when(F.count("true_range").over(_last(window)) == window, atr).alias(f"atr_{window}"))


def compute_volume(bars: DataFrame, window: int) -> DataFrame:
    mean = F.avg("volume").over(_last(window))
    std = F.stddev_samp("volume").over(_last(window))
    zscore = F.when(std > 0, (F.col("volume") - mean) / std).otherwise(F.lit(0.0))
    typical = (F.col("high") + F.col("low") + F.col("close")) / 3.0
    vwap = F.sum(typical * F.col("volume")).over(_last(window)) / F.sum("volume").over(_last(window))
    return _finish(
        bars, _full(zscore, window).alias(f"volume_zscore_{window}"), _full(vwap, window).alias(f"vwap_{window}")
    )


RETURNS = BaseFeature(
    view=FeatureView(
        name="returns",
        version="1.0.0",
        entity_keys=KEYS,
        key_types=KEY_TYPES,
        features=_doubles("log_return", "volatility_20"),
        ttl=timedelta(hours=2),
        description="Log return of the close and its 20-bar rolling standard deviation.",
    ),
    compute=compute_returns,
    params={"window": 20},
    lookback_bars=21,
)
TREND = BaseFeature(
    view=FeatureView(
        name="trend",
        version="1.0.0",
        entity_keys=KEYS,
        key_types=KEY_TYPES,
        features=_doubles("sma_distance_20", "rsi_14"),
        ttl=timedelta(hours=2),
        description="Distance of the close to its 20-bar SMA, and 14-bar RSI (simple averages).",
    ),
    compute=compute_trend,
    params={"sma_window": 20, "rsi_window": 14},
    lookback_bars=20,
)
RANGE = BaseFeature(
    view=FeatureView(
        name="bar_range",
        version="1.0.0",
        entity_keys=KEYS,
        key_types=KEY_TYPES,
        features=_doubles("atr_14"),
        ttl=timedelta(hours=2),
        description="14-bar average true range.",
    ),
    compute=compute_range,
    params={"window": 14},
    lookback_bars=15,
)
VOLUME = BaseFeature(
    view=FeatureView(
        name="volume",
        version="1.0.0",
        entity_keys=KEYS,
        key_types=KEY_TYPES,
        features=_doubles("volume_zscore_20", "vwap_20"),
        ttl=None,
        description="20-bar volume z-score and 20-bar rolling VWAP of the typical price.",
    ),
    compute=compute_volume,
    params={"window": 20},
    lookback_bars=20,
)
