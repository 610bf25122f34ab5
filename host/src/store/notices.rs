//! Change notices, routed per user: a commit wakes only its own user's event
//! streams and long polls, so what a push costs does not grow with the
//! number of streams other users hold open.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use tokio::sync::broadcast;

use super::Notice;

/// Notices buffered per user's subscriber before it is told it lagged (and resyncs).
const PER_USER_BUFFER: usize = 64;

/// One channel per user with subscribers.
#[derive(Default)]
pub struct NoticeHub {
    users: Mutex<Users>,
}

#[derive(Default)]
struct Users {
    channels: HashMap<String, broadcast::Sender<Notice>>,
    /// Channels kept after the last sweep of unsubscribed users.
    swept_at: usize,
}

impl NoticeHub {
    /// Delivers `notice` to its user's subscribers; a resync notice to everyone's.
    pub fn publish(&self, notice: Notice) {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        if notice.is_resync() {
            for channel in users.channels.values() {
                let _ = channel.send(notice.clone());
            }
            return;
        }
        let user = notice.user.clone();
        if let Some(channel) = users.channels.get(&user)
            && channel.send(notice).is_err()
        {
            // Nobody listens any more.
            users.channels.remove(&user);
        }
    }

    /// Notices of `user`'s commits (and resyncs) from now on.
    pub fn subscribe(&self, user: &str) -> broadcast::Receiver<Notice> {
        let mut users = self.users.lock().unwrap_or_else(PoisonError::into_inner);
        // Forget users whose subscribers all went away, whenever the map has doubled.
        if users.channels.len() > 2 * users.swept_at.max(512) {
            users.channels.retain(|_, c| c.receiver_count() > 0);
            users.swept_at = users.channels.len();
        }
        match users.channels.get(user) {
            Some(channel) => channel.subscribe(),
            None => {
                let (channel, receiver) = broadcast::channel(PER_USER_BUFFER);
                users.channels.insert(user.to_string(), channel);
                receiver
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_reaches_only_its_users_subscribers_and_a_resync_everyone() {
        let hub = NoticeHub::default();
        let (mut alice, mut bob) = (hub.subscribe("alice"), hub.subscribe("bob"));
        hub.publish(Notice { user: "alice".into(), seq: 1 });
        hub.publish(Notice { user: "carol".into(), seq: 9 });
        assert_eq!(alice.try_recv().map(|n| n.seq).ok(), Some(1));
        assert!(alice.try_recv().is_err());
        assert!(bob.try_recv().is_err(), "bob hears nothing of alice's or carol's commits");
        hub.publish(Notice::resync());
        assert!(alice.try_recv().is_ok_and(|n| n.is_resync()));
        assert!(bob.try_recv().is_ok_and(|n| n.is_resync()));
        drop(bob);
        hub.publish(Notice { user: "bob".into(), seq: 2 });
        assert!(!hub.users.lock().unwrap().channels.contains_key("bob"), "a user nobody listens to is forgotten");
    }
}
