//! Ogmma: `POST /v1/channels/{channelId}/messages/react`, body `{messageId, emoji}`; an empty
//! emoji removes the sender's reaction.

use serde::Serialize;

use crate::plan::{Action, Row};

pub(super) fn path(channel_id: &str) -> String {
    ["/v1/channels/", channel_id, "/messages/react"].concat()
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "messageId")]
    message_id: &'a str,
    emoji: &'a str,
}

pub(super) fn body(row: &Row) -> Vec<u8> {
    let emoji = match row.action {
        Action::React => row.emoji.as_deref().unwrap_or(""),
        Action::Unreact => "",
    };
    let body = Body {
        message_id: row.message_id.as_deref().unwrap_or(""),
        emoji,
    };
    // Serialising a struct of strings into a Vec cannot fail.
    serde_json::to_vec(&body).unwrap_or_default()
}
