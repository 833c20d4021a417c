//! `siegel queue …`: reads the spool directly, so it works whether the
//! gateway runs or not; changes go through the spool's control requests,
//! which a running gateway picks up and a stopped one has applied at once.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use siegel_spool::{Control, Entry, RcptState, Spool};
use siegel_types::QueueId;

use crate::cli::QueueAction;
use crate::config_cmd;

pub fn run(config_path: Option<&Path>, action: QueueAction) -> anyhow::Result<ExitCode> {
    let config = config_cmd::load(config_path)?;
    let dir = config.server.data_dir.join("spool");
    anyhow::ensure!(
        dir.is_dir(),
        "no spool at {} (has the gateway ever run with this data folder?)",
        dir.display()
    );
    let spool =
        Spool::open(&dir).with_context(|| format!("opening the spool {}", dir.display()))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match action {
        QueueAction::List => {
            let entries = spool.list()?;
            if entries.is_empty() {
                println!("queue is empty");
            }
            for entry in &entries {
                println!("{}", summary(entry));
            }
        }
        QueueAction::Show { id } => {
            let entry = spool.load(&parse_id(&id)?)?;
            print!("{}", details(&entry));
        }
        QueueAction::Retry { id } => {
            let id = parse_id(&id)?;
            spool.load(&id)?;
            runtime.block_on(spool.request(Control::Retry(id.clone())))?;
            println!("{id}: retry requested");
        }
        QueueAction::Delete { id } => {
            let id = parse_id(&id)?;
            spool.load(&id)?;
            runtime.block_on(spool.request(Control::Delete(id.clone())))?;
            println!("{id}: deleted");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn parse_id(id: &str) -> anyhow::Result<QueueId> {
    id.parse::<QueueId>().map_err(|e| anyhow::anyhow!("{e}"))
}

fn rcpt_word(state: &RcptState) -> &'static str {
    match state {
        RcptState::Pending => "pending",
        RcptState::Delivered { .. } => "delivered",
        RcptState::Deferred { .. } => "deferred",
        RcptState::Failed { .. } => "failed",
    }
}

pub(crate) fn summary(entry: &Entry) -> String {
    let env = &entry.envelope;
    let rcpts: Vec<String> = env
        .recipients
        .iter()
        .zip(&entry.state.recipients)
        .map(|(r, s)| format!("{} [{}]", r.address, rcpt_word(s)))
        .collect();
    format!(
        "{} {:?} {} <{}> -> {}",
        env.id,
        entry.state.stage,
        env.size,
        env.mail_from,
        rcpts.join(", ")
    )
}

pub(crate) fn details(entry: &Entry) -> String {
    let env = &entry.envelope;
    let mut out = String::new();
    out.push_str(&format!("id:          {}\n", env.id));
    out.push_str(&format!("stage:       {:?}\n", entry.state.stage));
    out.push_str(&format!("direction:   {:?}\n", env.direction));
    out.push_str(&format!("from:        <{}>\n", env.mail_from));
    out.push_str(&format!(
        "message-id:  {}\n",
        env.message_id.as_deref().unwrap_or("-")
    ));
    out.push_str(&format!("size:        {}\n", env.size));
    out.push_str(&format!("received at: {}\n", env.received_at));
    out.push_str(&format!("attempts:    {}\n", entry.state.attempts));
    out.push_str(&format!("next try:    {}\n", entry.state.next_attempt));
    if let Some(note) = &entry.state.note {
        out.push_str(&format!("note:        {note}\n"));
    }
    for (r, s) in env.recipients.iter().zip(&entry.state.recipients) {
        let detail = match s {
            RcptState::Pending => String::new(),
            RcptState::Delivered { host, reply, .. } => format!(" via {host}: {reply}"),
            RcptState::Deferred {
                attempts,
                last_error,
            } => format!(" after {attempts} attempts: {last_error}"),
            RcptState::Failed { reason, .. } => format!(": {reason}"),
        };
        out.push_str(&format!(
            "recipient:   <{}> {}{}\n",
            r.address,
            rcpt_word(s),
            detail
        ));
    }
    out
}
