//! What each row kind may say, as `docs/protocol.md` ("Row kinds") lists it: the chain it
//! belongs to, who may cause it, whether it names a command, and its payload members with their
//! types, all present and no others. A row whose statement is well formed but says something
//! the brain never writes (an unknown kind, an extra or missing member, a command id on a site
//! row) is tampering: a verifier that skipped it would vouch for what it cannot check.
//!
//! The checks read the payload already parsed for the canonical-form check; they allocate
//! nothing for a row that passes.

use serde_json::{Map, Value};

use super::Problem;
use crate::audit::{ActorKind, Statement};

/// A payload member's type.
#[derive(Clone, Copy)]
pub(super) enum Type {
    Str,
    Bool,
    Int,
    /// A string of decimal digits (ms times, depths).
    Decimal,
    /// An RFC 3339 UTC string ending in `Z`.
    Rfc3339,
    /// Any JSON object (the caller's filter, an archive, a schedule's config).
    AnyObject,
    /// An array of strings.
    Strings,
    /// An object with exactly these members.
    Object(&'static [(&'static str, Type)]),
    /// The type, or `null`.
    OrNull(&'static Type),
    /// One of these strings.
    OneOf(&'static [&'static str]),
}

use Type::*;

const ID_NAME: Type = Object(&[("id", Str), ("name", Str)]);
const ID_SLUG: Type = Object(&[("id", Str), ("slug", Str)]);
const SCHEDULE: Type = Object(&[
    ("id", Str),
    ("name", Str),
    ("type", Str),
    ("enabled", Bool),
    ("cron", Str),
    ("timezone", Str),
    ("config", OrNull(&AnyObject)),
]);
const TOKEN: &[(&str, Type)] = &[
    ("token_id", Str),
    ("prefix", Str),
    ("name", Str),
    ("owner", Str),
    ("expires_at_ms", OrNull(&Decimal)),
];
/// The members of every outcome row's payload; `agent_result` is checked by
/// [`super::commands`], which knows the command.
pub(super) const OUTCOME: &[(&str, Type)] = &[
    ("status", Str),
    (
        "previous_status",
        OneOf(&["issued", "dispatched", "succeeded", "failed", "timed_out"]),
    ),
    ("late", Bool),
    ("detail", OrNull(&Str)),
    ("agent_result", OrNull(&AnyObject)),
];
/// An agent's signed result, `payload.agent_result` of an outcome row.
pub(super) const SIGNED_RESULT: &[(&str, Type)] = &[
    (
        "result",
        Object(&[
            ("command_id", Str),
            ("row_hash", Str),
            ("agent_id", Str),
            ("session", Int),
            (
                "outcome",
                OneOf(&["succeeded", "failed", "refused", "interrupted"]),
            ),
            ("detail", Str),
            ("finished_at_ms", Decimal),
        ]),
    ),
    ("signature", Str),
];

/// Which chain a kind is written to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Chain {
    Site,
    Project,
}

/// Who may cause a row: these actor types, and for `system` (when given) this name (a system
/// actor's id is always `brain`; its name says which part of it acted).
struct Actors(&'static [ActorKind], Option<&'static str>);

const USER_OR_SYSTEM: Actors = Actors(&[ActorKind::User, ActorKind::System], None);
const USER: Actors = Actors(&[ActorKind::User], None);
const SCHEDULE_ONLY: Actors = Actors(&[ActorKind::Schedule], None);
const AGENT: Actors = Actors(&[ActorKind::Agent], None);

/// One kind's rules.
struct Spec {
    kind: &'static str,
    chain: Chain,
    actors: Actors,
    /// Alternative member lists (`tasks.deleted` has two shapes); most kinds have one.
    shapes: &'static [&'static [(&'static str, Type)]],
}

const SPECS: &[Spec] = &[
    Spec {
        kind: "site.bootstrapped",
        chain: Chain::Site,
        actors: Actors(&[ActorKind::System], Some("bootstrap")),
        shapes: &[&[
            ("admin", ID_NAME),
            ("project", ID_SLUG),
            ("token_prefix", OrNull(&Str)),
            ("created", Strings),
        ]],
    },
    Spec {
        kind: "user.created",
        chain: Chain::Site,
        actors: USER_OR_SYSTEM,
        shapes: &[&[(
            "user",
            Object(&[("id", Str), ("name", Str), ("site_admin", Bool)]),
        )]],
    },
    Spec {
        kind: "user.password_set",
        chain: Chain::Site,
        actors: USER_OR_SYSTEM,
        shapes: &[&[("user", ID_NAME)]],
    },
    Spec {
        kind: "user.deleted",
        chain: Chain::Site,
        actors: USER_OR_SYSTEM,
        shapes: &[&[("user", ID_NAME)]],
    },
    Spec {
        kind: "token.created",
        chain: Chain::Site,
        actors: USER_OR_SYSTEM,
        shapes: &[TOKEN],
    },
    Spec {
        kind: "token.revoked",
        chain: Chain::Site,
        actors: USER_OR_SYSTEM,
        shapes: &[TOKEN],
    },
    Spec {
        kind: "project.created",
        chain: Chain::Site,
        actors: USER_OR_SYSTEM,
        shapes: &[&[("project", ID_SLUG), ("chain", Str)]],
    },
    Spec {
        kind: "key.rotated",
        chain: Chain::Site,
        actors: Actors(&[ActorKind::System], None),
        // Rows written before scheduled switches have no `switch_at_ms`.
        shapes: &[
            &[
                ("old_key_id", Str),
                ("new_key_id", Str),
                ("new_public_key", Str),
                ("switch_at_ms", Int),
            ],
            &[
                ("old_key_id", Str),
                ("new_key_id", Str),
                ("new_public_key", Str),
            ],
        ],
    },
    Spec {
        kind: "project.deletion_started",
        chain: Chain::Project,
        actors: USER_OR_SYSTEM,
        shapes: &[&[(
            "project",
            Object(&[("id", Str), ("slug", Str), ("name", Str)]),
        )]],
    },
    Spec {
        kind: "member.role_set",
        chain: Chain::Project,
        actors: USER_OR_SYSTEM,
        shapes: &[&[
            ("user", ID_NAME),
            ("role", OneOf(&["viewer", "operator", "admin"])),
            ("added", Bool),
        ]],
    },
    Spec {
        kind: "member.removed",
        chain: Chain::Project,
        actors: USER_OR_SYSTEM,
        shapes: &[&[("user", ID_NAME)]],
    },
    Spec {
        kind: "agent.created",
        chain: Chain::Project,
        // A user through the API, or the brain's first start registering `first-agent`.
        actors: Actors(&[ActorKind::User, ActorKind::System], Some("first-start")),
        shapes: &[&[(
            "agent",
            Object(&[("id", Str), ("name", Str), ("preserve", Bool)]),
        )]],
    },
    Spec {
        kind: "agent.enrollment_reissued",
        chain: Chain::Project,
        actors: Actors(&[ActorKind::System], Some("first-start")),
        shapes: &[&[("agent", ID_NAME), ("expires_at", Rfc3339)]],
    },
    Spec {
        kind: "agent.enrolled",
        chain: Chain::Project,
        actors: AGENT,
        shapes: &[&[
            ("agent", ID_NAME),
            ("public_key", Str),
            ("key_id", Str),
            ("hostname", OrNull(&Str)),
        ]],
    },
    Spec {
        kind: "agent.deleted",
        chain: Chain::Project,
        actors: USER,
        shapes: &[&[("agent", ID_NAME)]],
    },
    Spec {
        kind: "agent.stale_removed",
        chain: Chain::Project,
        actors: Actors(&[ActorKind::User, ActorKind::Schedule], None),
        shapes: &[&[
            ("agent", ID_NAME),
            ("inactive_hours", Int),
            ("last_updated_at", Rfc3339),
            ("workers", Strings),
            ("lost_tasks", Int),
            ("archive", OrNull(&AnyObject)),
        ]],
    },
    Spec {
        kind: "schedule.created",
        chain: Chain::Project,
        actors: USER,
        shapes: &[&[("schedule", SCHEDULE)]],
    },
    Spec {
        kind: "schedule.updated",
        chain: Chain::Project,
        actors: USER,
        shapes: &[&[("schedule", SCHEDULE)]],
    },
    Spec {
        kind: "schedule.deleted",
        chain: Chain::Project,
        actors: USER,
        shapes: &[&[("schedule", SCHEDULE)]],
    },
    Spec {
        kind: "schedule.retention",
        chain: Chain::Project,
        actors: SCHEDULE_ONLY,
        shapes: &[&[
            ("schedule", ID_NAME),
            ("older_than_days", Int),
            ("cutoff", Rfc3339),
        ]],
    },
    Spec {
        kind: "schedule.alert",
        chain: Chain::Project,
        actors: SCHEDULE_ONLY,
        shapes: &[&[("schedule", ID_NAME), ("run", Str), ("failures", Strings)]],
    },
    Spec {
        kind: "tasks.deleted",
        chain: Chain::Project,
        actors: USER,
        shapes: &[
            &[("task_ids", Strings), ("deleted_count", Int)],
            &[
                ("filter", AnyObject),
                ("deleted_count", Int),
                ("skipped_in_flight", Int),
            ],
        ],
    },
    Spec {
        kind: "command.issued",
        chain: Chain::Project,
        actors: Actors(&[ActorKind::User, ActorKind::Schedule], None),
        // The command's own members are checked by [`super::commands`].
        shapes: &[&[("command", AnyObject)]],
    },
    Spec {
        kind: "command.dispatched",
        chain: Chain::Project,
        actors: AGENT,
        shapes: &[OUTCOME],
    },
    Spec {
        kind: "command.succeeded",
        chain: Chain::Project,
        actors: AGENT,
        shapes: &[OUTCOME],
    },
    Spec {
        kind: "command.failed",
        chain: Chain::Project,
        actors: AGENT,
        shapes: &[OUTCOME],
    },
    Spec {
        kind: "command.timed_out",
        chain: Chain::Project,
        actors: Actors(&[ActorKind::System], Some("brain")),
        shapes: &[OUTCOME],
    },
];

/// Checks a statement's kind, chain, actor, `command_id` and payload members against the
/// protocol's table of row kinds.
pub(super) fn check(chain: &str, statement: &Statement) -> Result<(), Problem> {
    let kind = statement.kind.as_str();
    let chain_kind = if chain.starts_with("site:") {
        Chain::Site
    } else {
        Chain::Project
    };
    let Some(spec) = SPECS.iter().find(|s| s.kind == kind) else {
        return Err(Problem::UnknownKind(kind.to_owned()));
    };
    if spec.chain != chain_kind {
        let home = match spec.chain {
            Chain::Site => "the site chain",
            Chain::Project => "a project chain",
        };
        return Err(Problem::Kind(format!(
            "{kind} belongs on {home}, not on {chain}"
        )));
    }
    let is_command = kind.starts_with("command.");
    match (&statement.command_id, is_command) {
        (None, true) => {
            return Err(Problem::Kind(format!("{kind} has no command_id")));
        }
        (Some(_), false) => {
            return Err(Problem::Kind(format!(
                "{kind} carries a command_id (only command rows do)"
            )));
        }
        _ => {}
    }
    let actor = &statement.actor;
    let Actors(types, system_name) = &spec.actors;
    let allowed = types.contains(&actor.kind)
        && (actor.kind != ActorKind::System
            || (actor.id == "brain" && system_name.is_none_or(|name| actor.name == name)));
    if !allowed {
        return Err(Problem::Actor(format!(
            "{kind} caused by {} {:?} ({:?}), which never writes it",
            actor.kind.as_str(),
            actor.id,
            actor.name
        )));
    }
    let Some(payload) = statement.payload.as_object() else {
        return Err(Problem::Payload(format!(
            "{kind}: the payload is not an object"
        )));
    };
    let mut first_error = None;
    for shape in spec.shapes {
        match members(payload, shape, "payload") {
            Ok(()) => return Ok(()),
            Err(why) => {
                first_error.get_or_insert(why);
            }
        }
    }
    Err(Problem::Payload(format!(
        "{kind}: {}",
        first_error.expect("every kind has a shape")
    )))
}

/// Checks that `object` has exactly `shape`'s members, each of its type; `path` names the
/// object in the message.
pub(super) fn members(
    object: &Map<String, Value>,
    shape: &[(&str, Type)],
    path: &str,
) -> Result<(), String> {
    for (name, value) in object {
        let Some((_, ty)) = shape.iter().find(|(n, _)| n == name) else {
            return Err(format!(
                "{path} has a member {name:?} the protocol does not define"
            ));
        };
        typed(value, *ty).map_err(|why| format!("{path}.{name} {why}"))?;
    }
    if object.len() != shape.len() {
        let missing = shape
            .iter()
            .find(|(n, _)| !object.contains_key(*n))
            .map_or("", |(n, _)| n);
        return Err(format!("{path} lacks the member {missing:?}"));
    }
    Ok(())
}

fn typed(value: &Value, ty: Type) -> Result<(), String> {
    let ok = match ty {
        Str => value.is_string(),
        Bool => value.is_boolean(),
        Int => value.is_i64() || value.is_u64(),
        Decimal => value.as_str().is_some_and(is_decimal),
        Rfc3339 => value.as_str().is_some_and(is_rfc3339),
        AnyObject => value.is_object(),
        Strings => value
            .as_array()
            .is_some_and(|items| items.iter().all(Value::is_string)),
        Object(shape) => {
            let Some(object) = value.as_object() else {
                return Err("is not an object".into());
            };
            return members(object, shape, "");
        }
        OrNull(inner) => {
            return if value.is_null() {
                Ok(())
            } else {
                typed(value, *inner)
            };
        }
        OneOf(choices) => value.as_str().is_some_and(|s| choices.contains(&s)),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("is not {}", describe(ty)))
    }
}

fn describe(ty: Type) -> &'static str {
    match ty {
        Str => "a string",
        Bool => "a bool",
        Int => "an integer",
        Decimal => "a string of decimal digits",
        Rfc3339 => "an RFC 3339 UTC time",
        AnyObject | Object(_) => "an object",
        Strings => "an array of strings",
        OrNull(inner) => describe(*inner),
        OneOf(_) => "one of the values the protocol lists",
    }
}

/// Decimal digits, at least one.
pub(super) fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY-MM-DDTHH:MM:SS[.f{3,6,9}]Z`.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    if b.len() < 20 || b[b.len() - 1] != b'Z' {
        return false;
    }
    let fraction = &b[19..b.len() - 1];
    let fraction_ok = fraction.is_empty()
        || (fraction[0] == b'.'
            && matches!(fraction.len() - 1, 3 | 6 | 9)
            && fraction[1..].iter().all(u8::is_ascii_digit));
    fraction_ok
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_take_0_3_6_or_9_fraction_digits() {
        for good in [
            "2026-11-20T08:00:00Z",
            "2026-11-20T08:00:00.123Z",
            "2026-11-20T08:00:00.123456Z",
            "2026-11-20T08:00:00.123456789Z",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2026-11-20T08:00:00.1Z",
            "2026-11-20T08:00:00+00:00",
            "2026-11-20 08:00:00Z",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }
}
