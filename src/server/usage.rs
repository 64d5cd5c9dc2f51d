//! The users' usage across restarts ([`crate::ops::usage_store`]): restored before the first
//! connection, saved every [`SAVE_EVERY`] while it changes, and once more at shutdown; and
//! across a fleet ([`crate::ops::fleet_usage`]): synced through Redis every
//! [`users::ENFORCE_EVERY`].

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use crate::conn::context::{Context, Snapshot};
use crate::mtproto::users;
use crate::ops::fleet_usage::UsageSync;
use crate::ops::usage_store::{self, SavedUsage, SAVE_EVERY};

/// Puts the saved usage into `snapshot`'s user counters, when a state directory is set.
pub async fn restore(snapshot: &Snapshot) {
    let (Some(dir), Some(settings), Some(state)) = (
        snapshot.config.state_dir.clone(),
        &snapshot.config.mtproto,
        &snapshot.mtproto,
    ) else {
        return;
    };
    let shown = dir.display().to_string();
    match tokio::task::spawn_blocking(move || usage_store::load(&dir)).await {
        Ok(Ok(saved)) => {
            usage_store::restore(settings, state, &saved);
            tracing::info!(dir = %shown, users = saved.len(), "user usage restored");
        }
        Ok(Err(error)) => tracing::error!(%error, "user usage not restored"),
        Err(error) => tracing::error!(%error, "reading the user usage failed"),
    }
}

/// Writes the usage of the running snapshot whenever it changed, every [`SAVE_EVERY`], until
/// the gateway is gone.
pub async fn keep_saving(ctx: Weak<Context>) {
    let mut tick = tokio::time::interval(SAVE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = BTreeMap::new();
    let mut failing = false;
    loop {
        tick.tick().await;
        let Some(snapshot) = ctx.upgrade().map(|ctx| ctx.current.load_full()) else {
            return;
        };
        match save_if_changed(&snapshot, &last).await {
            Some(Ok(saved)) => {
                if failing {
                    tracing::info!("user usage is being saved again");
                }
                (last, failing) = (saved, false);
            }
            Some(Err(error)) if !failing => {
                tracing::error!(%error, "saving the user usage failed; retrying every {SAVE_EVERY:?}");
                failing = true;
            }
            _ => {}
        }
    }
}

/// Saves the usage now (at shutdown).
pub async fn save_now(snapshot: &Arc<Snapshot>) {
    if let Some(Err(error)) = save_if_changed(snapshot, &BTreeMap::new()).await {
        tracing::error!(%error, "saving the user usage at shutdown failed");
    }
}

/// Writes `snapshot`'s usage unless it equals `last`; `None` when there was nothing to do.
async fn save_if_changed(
    snapshot: &Arc<Snapshot>,
    last: &BTreeMap<String, SavedUsage>,
) -> Option<Result<BTreeMap<String, SavedUsage>, String>> {
    let dir = snapshot.config.state_dir.clone()?;
    let (settings, state) = (
        snapshot.config.mtproto.as_ref()?,
        snapshot.mtproto.as_ref()?,
    );
    let usage = usage_store::snapshot(settings, state);
    if usage == *last && !last.is_empty() {
        return None;
    }
    let saved =
        tokio::task::spawn_blocking(move || usage_store::save(&dir, &usage).map(|()| usage)).await;
    Some(match saved {
        Ok(Ok(usage)) => Ok(usage),
        Ok(Err(error)) => Err(error.to_string()),
        Err(error) => Err(error.to_string()),
    })
}

/// Syncs the users' quota counts with the fleet every [`users::ENFORCE_EVERY`] while the
/// running snapshot has `state.redis`, until the gateway is gone. Start it after
/// [`restore`]: what is restored counts as pushed by the run that counted it.
pub async fn keep_syncing(ctx: Weak<Context>) {
    let mut sync = {
        let Some(snapshot) = ctx.upgrade().map(|ctx| ctx.current.load_full()) else {
            return;
        };
        match (&snapshot.config.mtproto, &snapshot.mtproto) {
            (Some(settings), Some(state)) => UsageSync::seeded(settings, state),
            _ => UsageSync::default(),
        }
    };
    let mut tick = tokio::time::interval(users::ENFORCE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(snapshot) = ctx.upgrade().map(|ctx| ctx.current.load_full()) else {
            return;
        };
        let (Some(settings), Some(state)) = (&snapshot.config.mtproto, &snapshot.mtproto) else {
            continue;
        };
        if let Some(shared) = state.shared() {
            sync.sync(settings, state, shared).await;
        }
    }
}
