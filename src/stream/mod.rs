//! Live job updates: the [`hub::Hub`] that fans new events and metric points out to watchers,
//! and the cursor that lets a watcher resume without gaps or repeats.

pub mod hub;
