//! The change feed: a thread that LISTENs on the schema's channel and tells the caller what another
//! instance wrote, and the payloads writers send on that channel.

use super::pool::config;
use crate::config::PostgresSettings;
use crate::rt::shutdown::Shutdown;
use crate::store::backend::Change;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, NoTls};
use std::time::Duration;

/// The channel writers of `schema` notify and the feed listens on.
pub(super) fn channel(schema: &str) -> String {
    format!("{schema}_changes")
}

/// What a writer sends for `change`; [`change_of`] reads it back.
pub(super) fn payload(change: &Change) -> String {
    match change {
        Change::Keys => "keys".to_owned(),
        Change::Prices => "prices".to_owned(),
        Change::Credits(account) => format!("credits:{account}"),
        Change::All => "all".to_owned(),
    }
}

/// The change a notification's payload tells; one this build does not know means catch up with
/// everything.
fn change_of(payload: &str) -> Change {
    match payload {
        "keys" => Change::Keys,
        "prices" => Change::Prices,
        p => match p.strip_prefix("credits:") {
            Some(account) => Change::Credits(account.to_owned()),
            None => Change::All,
        },
    }
}

/// Starts the change feed: a thread (`pg-feed`) with its own connection that LISTENs on
/// `<schema>_changes` and calls `on_change` for each notification, and `Change::All` after every
/// (re)connect, the first included. It reconnects with a growing pause (200 ms to 2 s) and returns
/// within about 100 ms of `stop` being set.
pub fn spawn_change_feed(
    settings: &PostgresSettings,
    stop: Shutdown,
    mut on_change: Box<dyn FnMut(Change) + Send>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let config = config(&settings.url).map_err(|e| std::io::Error::other(e.to_string()))?;
    let channel = channel(&settings.schema);
    std::thread::Builder::new().name("pg-feed".into()).spawn(move || {
        crate::rt::make_background_thread();
        let mut pause = Duration::from_millis(200);
        let mut was_up = true;
        while !stop.is_triggered() {
            let mut client = match config.connect(NoTls) {
                Ok(c) => c,
                Err(e) => {
                    if was_up {
                        log::warn!(target: "store", "change feed: cannot connect (will retry): {e}");
                        was_up = false;
                    }
                    stop.wait_timeout(pause);
                    pause = (pause * 2).min(Duration::from_secs(2));
                    continue;
                }
            };
            if let Err(e) = client.batch_execute(&format!("LISTEN \"{channel}\"")) {
                log::warn!(target: "store", "change feed: LISTEN failed: {e}");
                stop.wait_timeout(pause);
                continue;
            }
            if !was_up {
                log::info!(target: "store", "change feed: connected again");
            }
            was_up = true;
            pause = Duration::from_millis(200);
            // Anything written while nobody listened is caught up by version.
            on_change(Change::All);
            while !stop.is_triggered() && deliver(&mut client, &mut on_change) {
                if client.is_closed() {
                    log::warn!(target: "store", "change feed: connection closed (reconnecting)");
                    break;
                }
            }
        }
    })
}

/// Hands `on_change` what arrives within 100 ms; whether the connection still works.
fn deliver(client: &mut Client, on_change: &mut dyn FnMut(Change)) -> bool {
    let mut notifications = client.notifications();
    let mut iter = notifications.timeout_iter(Duration::from_millis(100));
    loop {
        match iter.next() {
            Ok(Some(n)) => on_change(change_of(n.payload())),
            Ok(None) => return true,
            Err(e) => {
                log::warn!(target: "store", "change feed: connection lost (reconnecting): {e}");
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_read_back_as_their_change() {
        for change in [Change::Keys, Change::Prices, Change::Credits("acc_1".into()), Change::All] {
            assert_eq!(change_of(&payload(&change)), change);
        }
        assert_eq!(change_of("something newer"), Change::All);
    }
}
