//! The preview builder: checks a project's revision out, restores its dependencies, runs Metro or
//! the Expo CLI, and packages the bundle (spec §7, DESIGN.md §8).
//!
//! - [`detect`]: Expo or bare React Native, and the entry file.

pub mod detect;
