//! Which intake part holds an offset: the rule that resolves overlapping
//! claims to a partition's offsets (`docs/intake-objects.md`, "Which claim
//! holds an offset"). Pure: the callers list and read.
//!
//! Claims at or below the end of the partition's segments are compacted
//! already. Of the rest, a claim of a higher generation overrides every
//! lower claim from its base on: generations grow with every recovery, and
//! a writer numbers from the log end it recovered, so an overridden claim
//! is one that landed after a later writer read the log end, which was never
//! acknowledged. What remains must be contiguous; anything else means the
//! history is not one this system writes, and is reported, not guessed at.

use thiserror::Error;

/// A claim to offsets `base_offset..=last_offset`, made at `generation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<S> {
    pub generation: u64,
    pub base_offset: i64,
    pub last_offset: i64,
    /// Where the bytes are (an intake object and a range, in the flusher).
    pub source: S,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ClaimError {
    #[error("two parts of generation {generation} both claim offset {offset}")]
    OverlapInGeneration { generation: u64, offset: i64 },
    #[error(
        "a part of generation {lower} ({base}..={last}) reaches into generation {higher}, which starts at {higher_base}"
    )]
    Straddle {
        lower: u64,
        base: i64,
        last: i64,
        higher: u64,
        higher_base: i64,
    },
    #[error("offsets {from}..{to} are claimed by no part")]
    Gap { from: i64, to: i64 },
}

/// The claims that hold the partition's offsets after `segments_end` (the
/// last offset in its segments, `None` without segments), in offset order
/// and contiguous.
pub fn resolve<S>(
    segments_end: Option<i64>,
    claims: Vec<Claim<S>>,
) -> Result<Vec<Claim<S>>, ClaimError> {
    let mut open: Vec<Claim<S>> = claims
        .into_iter()
        .filter(|c| segments_end.is_none_or(|end| c.base_offset > end))
        .collect();
    // Highest generation first; within one, in offset order.
    open.sort_by(|a, b| {
        b.generation
            .cmp(&a.generation)
            .then(a.base_offset.cmp(&b.base_offset))
    });
    let mut valid: Vec<Claim<S>> = Vec::with_capacity(open.len());
    // Offsets from here on belong to a higher generation than the one at hand.
    let mut cutoff: Option<(i64, u64)> = None;
    let mut current: Option<(u64, i64)> = None; // generation, lowest kept base
    let mut previous_in_generation: Option<(u64, i64)> = None; // generation, last offset
    for claim in open {
        if current.is_some_and(|(g, _)| g != claim.generation) {
            // A generation is done: what it kept bounds every lower one.
            if let Some((g, base)) = current.take() {
                cutoff = Some(cutoff.map_or((base, g), |c| if base < c.0 { (base, g) } else { c }));
            }
        }
        if let Some((g, last)) = previous_in_generation {
            if g == claim.generation && claim.base_offset <= last {
                return Err(ClaimError::OverlapInGeneration {
                    generation: g,
                    offset: claim.base_offset,
                });
            }
        }
        previous_in_generation = Some((claim.generation, claim.last_offset));
        if let Some((higher_base, higher)) = cutoff {
            if claim.base_offset >= higher_base {
                continue; // overridden
            }
            if claim.last_offset >= higher_base {
                return Err(ClaimError::Straddle {
                    lower: claim.generation,
                    base: claim.base_offset,
                    last: claim.last_offset,
                    higher,
                    higher_base,
                });
            }
        }
        current = Some(match current {
            Some((g, base)) => (g, base.min(claim.base_offset)),
            None => (claim.generation, claim.base_offset),
        });
        valid.push(claim);
    }
    valid.sort_by_key(|c| c.base_offset);
    let mut expected = segments_end.map(|end| end + 1);
    for c in &valid {
        if let Some(from) = expected.filter(|&e| e != c.base_offset) {
            return Err(ClaimError::Gap {
                from,
                to: c.base_offset,
            });
        }
        expected = Some(c.last_offset + 1);
    }
    Ok(valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(generation: u64, base: i64, last: i64) -> Claim<&'static str> {
        Claim {
            generation,
            base_offset: base,
            last_offset: last,
            source: "",
        }
    }

    fn ranges(v: &[Claim<&str>]) -> Vec<(u64, i64, i64)> {
        v.iter()
            .map(|c| (c.generation, c.base_offset, c.last_offset))
            .collect()
    }

    #[test]
    fn one_writer_is_read_in_offset_order() {
        let got = resolve(None, vec![c(1, 10, 19), c(1, 0, 9), c(1, 20, 20)]).unwrap();
        assert_eq!(ranges(&got), [(1, 0, 9), (1, 10, 19), (1, 20, 20)]);
    }

    #[test]
    fn a_late_claim_of_an_earlier_writer_is_overridden_from_the_later_writers_base() {
        // Generation 1 stored 0..=9, then its upload of 10..=19 landed after
        // generation 2 had read the log end (10) and written 10..=14.
        let got = resolve(None, vec![c(1, 0, 9), c(1, 10, 19), c(2, 10, 14)]).unwrap();
        assert_eq!(ranges(&got), [(1, 0, 9), (2, 10, 14)]);
        // The same when generation 2 has not written yet: the late claim holds
        // (nothing was acknowledged on it, and nothing contradicts it).
        let got = resolve(None, vec![c(1, 0, 9), c(1, 10, 19)]).unwrap();
        assert_eq!(ranges(&got), [(1, 0, 9), (1, 10, 19)]);
    }

    #[test]
    fn overrides_chain_across_several_generations() {
        let got = resolve(
            None,
            vec![
                c(1, 0, 9),
                c(1, 10, 29),
                c(3, 10, 11),
                c(2, 10, 19),
                c(3, 12, 12),
            ],
        )
        .unwrap();
        assert_eq!(ranges(&got), [(1, 0, 9), (3, 10, 11), (3, 12, 12)]);
    }

    #[test]
    fn compacted_claims_are_left_out_and_the_rest_must_follow_the_segments() {
        let got = resolve(Some(9), vec![c(1, 0, 9), c(1, 10, 19)]).unwrap();
        assert_eq!(ranges(&got), [(1, 10, 19)]);
        // A claim whose base is compacted is compacted, even if a late lower
        // one reached further.
        let got = resolve(Some(14), vec![c(1, 10, 19), c(2, 15, 15)]).unwrap();
        assert_eq!(ranges(&got), [(2, 15, 15)]);
        assert_eq!(
            resolve(Some(9), vec![c(1, 12, 19)]).unwrap_err(),
            ClaimError::Gap { from: 10, to: 12 }
        );
    }

    #[test]
    fn histories_this_system_cannot_write_are_errors() {
        assert_eq!(
            resolve(None, vec![c(1, 0, 9), c(1, 5, 12)]).unwrap_err(),
            ClaimError::OverlapInGeneration {
                generation: 1,
                offset: 5
            }
        );
        assert!(matches!(
            resolve(None, vec![c(1, 0, 12), c(2, 10, 19)]).unwrap_err(),
            ClaimError::Straddle {
                lower: 1,
                higher: 2,
                higher_base: 10,
                ..
            }
        ));
        assert_eq!(
            resolve(None, vec![c(1, 0, 9), c(1, 20, 29)]).unwrap_err(),
            ClaimError::Gap { from: 10, to: 20 }
        );
    }

    #[test]
    fn no_claims_resolve_to_nothing() {
        assert!(resolve::<()>(Some(5), Vec::new()).unwrap().is_empty());
        assert!(resolve::<()>(None, Vec::new()).unwrap().is_empty());
    }
}
