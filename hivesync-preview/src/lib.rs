//! The preview builder: checks a project's revision out, restores its dependencies, runs Metro or
//! the Expo CLI, and packages the bundle (spec §7, DESIGN.md §8).
//!
//! - [`request`]: asking for a build — the whole-build cache in front of the queue.
//! - [`job`]: the `preview_build` job's payload and result, for everything that writes or reads it.
//! - [`client`] (feature `client`): previews from a client, over HTTP.
//! - [`builder`]: the `preview_build` job handler that runs all of it.
//! - [`bundler`]: Metro and Expo runs.
//! - [`detect`]: Expo or bare React Native, and the entry file.
//! - [`deps`]: the dependency store and its restore into a checkout.
//! - [`manager`]: npm, yarn or pnpm, as the project's lockfile asks.
//! - [`install_network`]: what an install may reach (the registries), through a filtering proxy.
//! - [`package`]: `bundle.zip` and its `metadata.json`.
//! - [`runtime`]: what a client app must be to run a bundle, and the check against it.
//! - [`process`]: build steps in their own process group, with a minimal environment.
//! - [`sandbox`]: the bundler confined with bubblewrap (it runs the project's code).
//! - [`slot`]: the fixed directories builds run in, so Metro's cache is sound.
//! - [`log`]: the build log.
//! - [`toolchain`]: the Node and npm versions every key includes.
//! - [`workspace`]: monorepos: the app's folder, and where its dependencies install.

pub mod builder;
pub mod bundler;
#[cfg(feature = "client")]
pub mod client;
pub mod deps;
pub mod detect;
pub mod install_network;
pub mod job;
pub mod log;
pub mod manager;
pub mod package;
pub mod process;
pub mod request;
pub mod runtime;
pub mod sandbox;
pub mod slot;
pub mod toolchain;
pub mod workspace;
