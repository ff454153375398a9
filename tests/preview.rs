//! `patchd baseline preview` as a process against the fleet simulator (in this test's process,
