//! fieldkit-bridge: from detections to nozzles.
//!
//! Without the `std` feature this is what a microcontroller firmware embeds: the framed wire
//! [`protocol`], the device logic ([`device`]) and the operator status screen drawn with
//! embedded-graphics ([`display`]). With `std` (the default) it adds the host side: the serial
//! link with acknowledgements and reconnection, the actuation planner, the simulated MCU and
//! PNG rendering of the status screen.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod device;
pub mod display;
pub mod outbox;
pub mod protocol;

#[cfg(feature = "std")]
pub mod bridge;
#[cfg(feature = "std")]
pub mod error;
#[cfg(feature = "std")]
pub mod field;
#[cfg(feature = "std")]
pub mod link;
#[cfg(feature = "std")]
pub mod planner;
#[cfg(feature = "std")]
pub mod render;
#[cfg(feature = "std")]
pub mod sim;

#[cfg(feature = "std")]
pub use error::BridgeError;
