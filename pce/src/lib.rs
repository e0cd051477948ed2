//! Path computation: time-windowed bandwidth and label calendars, and path search over
//! them.
//!
//! **Architecture invariant:** pure. No I/O, no clock (`now` is an argument), no tokio,
//! tonic or diesel. The IDC owns the index and keeps it in step with the store.

pub mod calendar;
pub mod generate;
pub mod index;
pub mod labels;
pub mod path;
pub mod series;
pub mod weeks;

pub use calendar::{BandwidthCalendar, Interval, Step, peak_of, steps_of};
pub use index::{Index, Place, Usage};
pub use labels::{LabelCalendar, VlanBits};
pub use path::{
    Candidate, Computed, Hop, PathPlan, PathRequest, Route, Waypoint, check_plan, compute,
    find_path, find_path_in_all, resolve,
};
pub use series::{Conflict, OccurrencePlan, plan_series};
