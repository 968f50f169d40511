//! The preview builder: checks a project's revision out, restores its dependencies, runs Metro or
//! the Expo CLI, and packages the bundle (spec §7, DESIGN.md §8).
//!
//! - [`request`]: asking for a build — the whole-build cache in front of the queue.
//! - [`builder`]: the `preview_build` job handler that runs all of it.
//! - [`bundler`]: Metro and Expo runs.
//! - [`detect`]: Expo or bare React Native, and the entry file.
//! - [`deps`]: the dependency store and its restore into a checkout.
//! - [`package`]: `bundle.zip` and its `metadata.json`.
//! - [`process`]: build steps in their own process group, with a minimal environment.
//! - [`sandbox`]: the bundler confined with bubblewrap (it runs the project's code).
//! - [`log`]: the build log.
//! - [`toolchain`]: the Node and npm versions every key includes.

pub mod builder;
pub mod bundler;
pub mod deps;
pub mod detect;
pub mod log;
pub mod package;
pub mod process;
pub mod request;
pub mod sandbox;
pub mod toolchain;
