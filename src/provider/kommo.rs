//! Kommo Chats API: `POST /v2/origin/custom/{scope_id}/react`, body
//! `{conversation_id?, conversation_ref_id?, id?, msgid?, user{id?,ref_id?}, type, emoji?}`.

use serde::Serialize;

use crate::plan::{Action, Row};

pub(super) fn path(scope_id: &str) -> String {
    ["/v2/origin/custom/", scope_id, "/react"].concat()
}

#[derive(Serialize)]
struct User<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    ref_id: Option<&'a str>,
}

/// Field order is the documented one; serde_json keeps declaration order.
#[derive(Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    conversation_ref_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    msgid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<User<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    emoji: Option<&'a str>,
}

pub(super) fn body(row: &Row) -> Vec<u8> {
    let user = (row.user_id.is_some() || row.user_ref_id.is_some()).then_some(User {
        id: row.user_id.as_deref(),
        ref_id: row.user_ref_id.as_deref(),
    });
    let body = Body {
        conversation_id: row.conversation_id.as_deref(),
        conversation_ref_id: row.conversation_ref_id.as_deref(),
        id: row.message_id.as_deref(),
        msgid: row.msgid.as_deref(),
        user,
        kind: row.action.as_str(),
        // `unreact` carries an emoji only when the row gives one.
        emoji: row
            .emoji
            .as_deref()
            .filter(|e| !e.is_empty() || row.action == Action::React),
    };
    // Serialising a struct of strings into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}
