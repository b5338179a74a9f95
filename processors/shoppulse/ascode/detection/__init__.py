"""Detection tuning as code: the backtest that proposes ``detection/sensitivity.yaml``."""
