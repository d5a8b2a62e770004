//! Kommo Chats API: `POST /v2/origin/custom/{scope_id}/react`, body
//! `{conversation_id?, conversation_ref_id?, id?, msgid?, user{id?,ref_id?}, type, emoji?}`.

use crate::json;
use crate::plan::{Action, Row};

pub(super) fn path(scope_id: &str) -> String {
    ["/v2/origin/custom/", scope_id, "/react"].concat()
}

/// The body, fields in the documented order, absent ones left out: byte for byte what
/// `serde_json` made of the same fields (see the tests), without its serialiser (this runs
/// for every row).
pub(super) fn body(row: &Row) -> Vec<u8> {
    // `unreact` carries an emoji only when the row gives one.
    let emoji = row
        .emoji
        .as_deref()
        .filter(|e| !e.is_empty() || row.action == Action::React);
    let mut out = Vec::with_capacity(160);
    out.push(b'{');
    let mut first = true;
    let ids = [
        ("conversation_id", &row.conversation_id),
        ("conversation_ref_id", &row.conversation_ref_id),
        ("id", &row.message_id),
        ("msgid", &row.msgid),
    ];
    for (name, value) in ids {
        if let Some(v) = value {
            json::push_member(first, name, v, &mut out);
            first = false;
        }
    }
    if row.user_id.is_some() || row.user_ref_id.is_some() {
        json::push_key(first, "user", &mut out);
        first = false;
        out.push(b'{');
        let mut inner = true;
        for (name, value) in [("id", &row.user_id), ("ref_id", &row.user_ref_id)] {
            if let Some(v) = value {
                json::push_member(inner, name, v, &mut out);
                inner = false;
            }
        }
        out.push(b'}');
    }
    json::push_member(first, "type", row.action.as_str(), &mut out);
    if let Some(e) = emoji {
        json::push_member(false, "emoji", e, &mut out);
    }
    out.push(b'}');
    out
}
