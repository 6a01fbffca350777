"""The fused-era track (sglang 0.5.15 - 0.5.23): release table, base, series, reference."""
