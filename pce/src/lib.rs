//! Path computation: time-windowed bandwidth and label calendars, and path search over
//! them.
//!
//! **Architecture invariant:** pure. No I/O, no clock (`now` is an argument), no tokio,
//! tonic or diesel. The IDC owns the index and keeps it in step with the store.

pub mod calendar;
pub mod index;
pub mod labels;
pub mod path;

pub use calendar::{BandwidthCalendar, Interval, Step, peak_of, steps_of};
pub use index::{Index, Usage};
pub use labels::LabelCalendar;
pub use path::{PathPlan, PathRequest, check_plan, find_path, resolve};
