//! Unit tests of the merged engine; the table of real lines lives in `tests/patterns_engine.rs`.
