//! `patchd check --resolve` as a process against the fleet simulator (in this test's process, on
