//! The plan digest (the Terraform plan/apply habit): a SHA-256 over what a run would send —
//! every validated row, the targets without their secrets (credential *references* only), and
//! the plan's `settings:`. `run --dry-run` prints it; `run --expect-digest HASH` refuses to
//! run when the plan or any include changed since the audit. Row source positions are not
//! part of it (a comment added to the plan does not change what is sent); command-line flags
//! are not either.

use sha2::{Digest, Sha256};

use crate::plan::{Plan, Row, TargetKind};

pub struct PlanDigest {
    h: Sha256,
}

impl PlanDigest {
    pub fn new(plan: &Plan) -> PlanDigest {
        let mut d = PlanDigest { h: Sha256::new() };
        d.field("reactbatch-plan-digest-v1");
        for t in &plan.targets {
            d.field("target");
            d.field(&t.name);
            d.field(t.provider().as_str());
            d.field(&t.base_url);
            match &t.kind {
                TargetKind::Kommo {
                    scope_id,
                    user_id,
                    user_ref_id,
                } => {
                    d.field(scope_id);
                    d.opt(user_id.as_deref());
                    d.opt(user_ref_id.as_deref());
                }
                TargetKind::Ogmma { channel_id } => d.field(channel_id),
            }
            d.opt(t.rate.map(|r| r.to_string()).as_deref());
            d.field(&t.credential.to_string());
        }
        let s = &plan.settings;
        d.field("settings");
        d.opt(s.rate.map(|r| r.to_string()).as_deref());
        d.opt(s.burst.map(|v| v.to_string()).as_deref());
        d.opt(s.concurrency.map(|v| v.to_string()).as_deref());
        d.opt(s.retries.map(|v| v.to_string()).as_deref());
        d.opt(s.timeout.map(|v| v.as_millis().to_string()).as_deref());
        d.opt(
            s.shard
                .map(|v| format!("{}/{}", v.index, v.count))
                .as_deref(),
        );
        d.field("rows");
        d
    }

    fn field(&mut self, v: &str) {
        self.h.update((v.len() as u64).to_le_bytes());
        self.h.update(v.as_bytes());
    }

    fn opt(&mut self, v: Option<&str>) {
        match v {
            Some(v) => {
                self.h.update([1]);
                self.field(v);
            }
            None => self.h.update([0]),
        }
    }

    pub fn row(&mut self, row: &Row) {
        self.h.update(row.number.to_le_bytes());
        self.h.update((row.target as u64).to_le_bytes());
        self.field(row.action.as_str());
        for v in [
            &row.emoji,
            &row.message_id,
            &row.msgid,
            &row.conversation_id,
            &row.conversation_ref_id,
            &row.user_id,
            &row.user_ref_id,
            &row.previous_emoji,
            &row.key,
        ] {
            self.opt(v.as_deref());
        }
        self.opt(row.not_before.map(|t| t.to_rfc3339()).as_deref());
    }

    /// `sha256:` and 64 lowercase hex digits.
    pub fn finish(self) -> String {
        format!("sha256:{}", hex::encode(self.h.finalize()))
    }
}
