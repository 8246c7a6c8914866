//! Reloading the configuration (SIGHUP, a changed file, [`super::Gateway::reload`]) and the
//! signals of a process that is the gateway.
//!
//! Changes are found by polling the directory's file list, sizes and modification times every
//! `watch_interval` (no inotify: it misses editors that replace files by renaming and does not
//! see through the symlink swaps configuration managers use). A change is reloaded once the
//! directory looks the same on two looks in a row, so a file still being written is not read
//! half-way. A configuration that does not load is logged as an error and rejected; the one
//! already running keeps serving.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Shared;
use crate::error::ConfigError;

/// What a look at the directory found: every file with its size and modification time.
pub(crate) type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

fn fingerprint(root: &Path) -> Fingerprint {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            // Follow symlinks: a swapped link is a change of what it points to.
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.is_dir() {
                if out.len() < 100_000 {
                    stack.push(path);
                }
            } else {
                out.push((path, meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

/// Reload from the configuration directory now. `Ok(false)` without a directory.
pub(crate) fn reload_now(shared: &Shared) -> Result<bool, ConfigError> {
    let Some(root) = &shared.root else { return Ok(false) };
    // Taken before reading, so a change made while loading is seen by the next look.
    *shared.loaded.lock() = Some(fingerprint(root));
    match crate::config::load_dir(root) {
        Ok(cfg) => {
            let old = shared.config();
            let (a, b) = (&old.global.gateway, &cfg.global.gateway);
            if a.host != b.host || a.port != b.port {
                log::warn!("gateway: [gateway] host/port changed in {}; the new address takes effect at the next start", root.display());
            }
            shared.budgets.retain(&cfg.global.gateway.keys);
            shared.router.reload(cfg);
            shared.stats.reloads.fetch_add(1, Ordering::Relaxed);
            *shared.stats.last_reload_error.lock() = None;
            log::info!("gateway: configuration reloaded from {}", root.display());
            Ok(true)
        }
        Err(e) => {
            log::error!("gateway: configuration in {} rejected, the previous one keeps serving: {e}", root.display());
            *shared.stats.last_reload_error.lock() = Some(e.to_string());
            Err(e)
        }
    }
}

async fn reload_blocking(shared: &Arc<Shared>) {
    let s = shared.clone();
    let _ = tokio::task::spawn_blocking(move || reload_now(&s)).await;
}

/// Poll the directory until the gateway stops; reload when it differs from what was loaded
/// last and has settled. `forced` is the caller's `watch` option; without one, `[gateway]
/// watch` of the configuration running decides at each look (a reload can turn it on or off).
pub(crate) async fn watch(shared: Arc<Shared>, forced: Option<bool>) {
    let Some(root) = shared.root.clone() else { return };
    let look = |root: PathBuf| async move { tokio::task::spawn_blocking(move || fingerprint(&root)).await.unwrap_or_default() };
    if shared.loaded.lock().is_none() {
        let first = look(root.clone()).await;
        shared.loaded.lock().get_or_insert(first);
    }
    loop {
        let interval = shared.config().global.gateway.watch_interval;
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shared.stop_accept.cancelled() => return,
        }
        if !forced.unwrap_or(shared.config().global.gateway.watch) {
            continue;
        }
        let now = look(root.clone()).await;
        if shared.loaded.lock().as_ref() == Some(&now) {
            continue;
        }
        // Settle: reload only once two looks agree.
        let mut last = now;
        loop {
            tokio::time::sleep(interval.min(Duration::from_millis(200))).await;
            let again = look(root.clone()).await;
            if again == last {
                break;
            }
            last = again;
        }
        log::info!("gateway: a file under {} changed; reloading", root.display());
        reload_blocking(&shared).await;
    }
}

/// SIGTERM and SIGINT drain (a second one ends the drain at once); SIGHUP reloads.
pub(crate) fn handle_signals(shared: Arc<Shared>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup())) else {
        log::error!("gateway: could not install signal handlers; stop it with close()");
        return;
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => stop(&shared, "SIGTERM"),
                _ = int.recv() => stop(&shared, "SIGINT"),
                _ = hup.recv() => {
                    log::info!("gateway: SIGHUP: reloading the configuration");
                    reload_blocking(&shared).await;
                }
                _ = shared.closed.cancelled() => return,
            }
        }
    });
}

fn stop(shared: &Shared, which: &str) {
    if shared.draining.load(Ordering::SeqCst) {
        log::warn!("gateway: {which} while draining: stopping now");
        shared.drain(Some(Duration::ZERO));
    } else {
        log::info!("gateway: {which}: draining");
        shared.drain(None);
    }
}
