//! Ogmma: `POST /v1/channels/{channelId}/messages/react`, body `{messageId, emoji}`; an empty
//! emoji removes the sender's reaction.

use crate::json;
use crate::plan::{Action, Row};

pub(super) fn path(channel_id: &str) -> String {
    ["/v1/channels/", channel_id, "/messages/react"].concat()
}

/// `{"messageId":…,"emoji":…}`: byte for byte what `serde_json` made of it (see the
/// provider tests), without its serialiser (this runs for every row).
pub(super) fn body(row: &Row) -> Vec<u8> {
    let emoji = match row.action {
        Action::React => row.emoji.as_deref().unwrap_or(""),
        Action::Unreact => "",
    };
    let mut out = Vec::with_capacity(96);
    out.push(b'{');
    json::push_member(
        true,
        "messageId",
        row.message_id.as_deref().unwrap_or(""),
        &mut out,
    );
    json::push_member(false, "emoji", emoji, &mut out);
    out.push(b'}');
    out
}
