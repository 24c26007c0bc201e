//! Shared helpers of the fluxrate benchmarks.
