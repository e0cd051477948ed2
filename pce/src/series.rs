//! Admitting a series: every occurrence on one and the same path (the default, since
//! experimenters want the same conditions each week), or each on its own best path; and
//! for each occurrence that does not fit, why and what would.
//!
//! Occurrences of one series never overlap one another (the recurrence refuses that),
//! so each is checked against the index on its own: booking one does not change the
//! room another has.

use chrono::{DateTime, Utc};
use sluice_model::{Error, TimeWindow};

use crate::index::Index;
use crate::path::{PathPlan, PathRequest, check_plan, find_path, find_path_in_all};

/// One occurrence that does not fit, with what would.
#[derive(Debug, Clone)]
pub struct Conflict {
    /// Why not: on the series' path when there is one (with the bandwidth available
    /// there and the bottlenecks), else on any path (with the nearest start at which the
    /// occurrence alone would fit, `error.earliest_start`).
    pub error: Error,
    /// Another path on which this occurrence alone fits, if the series' path is full.
    pub alternative: Option<PathPlan>,
}

/// What the planner decided for one occurrence.
#[derive(Debug, Clone)]
pub struct OccurrencePlan {
    pub number: u32,
    pub window: TimeWindow,
    pub outcome: Result<PathPlan, Conflict>,
}

impl OccurrencePlan {
    pub fn fits(&self) -> bool {
        self.outcome.is_ok()
    }
}

/// Plans every occurrence of a series (`req` with each `(number, window)` in turn).
///
/// With `same_path`, the path is the lowest-metric one that fits every occurrence with
/// the same VLANs. When there is none, the series' path becomes the one that fits the
/// most occurrences (the lowest metric among those), and each occurrence it cannot
/// carry is a conflict. Without `same_path`, each occurrence gets its own best path.
pub fn plan_series(
    index: &Index,
    req: &PathRequest,
    occurrences: &[(u32, TimeWindow)],
    now: DateTime<Utc>,
    same_path: bool,
) -> Vec<OccurrencePlan> {
    let alone = |w: &TimeWindow| {
        let r = PathRequest {
            window: *w,
            ..req.clone()
        };
        find_path(index, &r, now)
    };
    if !same_path {
        return occurrences
            .iter()
            .map(|&(number, window)| OccurrencePlan {
                number,
                window,
                outcome: alone(&window).map_err(|error| Conflict {
                    error,
                    alternative: None,
                }),
            })
            .collect();
    }
    let windows: Vec<TimeWindow> = occurrences.iter().map(|o| o.1).collect();
    if let Ok(plan) = find_path_in_all(index, req, &windows, now) {
        return occurrences
            .iter()
            .map(|&(number, window)| OccurrencePlan {
                number,
                window,
                outcome: Ok(plan.clone()),
            })
            .collect();
    }
    // Some occurrence does not fit on any one path with the rest. Each occurrence's own
    // best path is a candidate for the series; the one that carries the most wins.
    let own: Vec<Result<PathPlan, Error>> = windows.iter().map(alone).collect();
    let mut candidates: Vec<&PathPlan> = Vec::new();
    for plan in own.iter().flatten() {
        if !candidates.contains(&plan) {
            candidates.push(plan);
        }
    }
    let on = |plan: &PathPlan, w: &TimeWindow| {
        let r = PathRequest {
            window: *w,
            ..req.clone()
        };
        check_plan(index, plan, &r, now)
    };
    let best = candidates
        .iter()
        .map(|&plan| {
            let carried = windows.iter().filter(|w| on(plan, w).is_ok()).count();
            (plan, carried)
        })
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.metric.cmp(&a.0.metric)))
        .map(|(plan, _)| plan.clone());
    occurrences
        .iter()
        .zip(own)
        .map(|(&(number, window), own)| {
            let outcome = match (&best, own) {
                (_, Err(error)) => Err(Conflict {
                    error,
                    alternative: None,
                }),
                (Some(series), Ok(own)) => match on(series, &window) {
                    Ok(()) => Ok(series.clone()),
                    Err(error) => Err(Conflict {
                        error,
                        alternative: Some(own),
                    }),
                },
                (None, Ok(own)) => Ok(own),
            };
            OccurrencePlan {
                number,
                window,
                outcome,
            }
        })
        .collect()
}
