//! The writer thread: a bounded queue of write jobs, served round-robin across
//! users, committed in groups.
//!
//! Fairness: jobs queue per user, and a group takes one job per user in turn.
//! A user served in a group rejoins the back of the line only when that group
//! has committed, so a user who arrives while another user's large job runs
//! is next: a small push waits for the group in progress, never behind a
//! queue of another user's jobs. A group also stops before a job that would
//! take its weight (records) over `MAX_GROUP_WEIGHT`, so a large job runs in a
//! group of its own and never holds small jobs back until it commits.
//!
//! Safety: a job runs only inside the group's transaction, each in its own
//! savepoint. When SQLite rolls the transaction back under us (disk full, I/O
//! error) or a savepoint cannot be closed, every job of the group so far is
//! told it failed, and no later job runs until a new transaction has begun —
//! so no caller is ever told "failed" for a write that commits.

use std::collections::{HashMap, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::{Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::StoreError;
use super::checkpoint::Checkpointer;

/// How many queued write jobs the writer commits together at most.
const MAX_GROUP: usize = 64;
/// A group stops before a job that would take its weight past this (a job's
/// weight is the number of records it writes, at least 1).
const MAX_GROUP_WEIGHT: usize = 2_000;

/// Tells a job's caller how the group transaction ended.
pub(super) type Finish = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The outcome of running one job inside the group transaction.
pub(super) struct Ran {
    /// Release the job's savepoint (true) or roll it back (false).
    pub keep: bool,
    pub finish: Finish,
}

/// One unit of work for the writer.
pub(super) trait WriteJob: Send {
    /// Runs inside the job's savepoint.
    fn run(self: Box<Self>, conn: &Connection) -> Ran;
    /// Tells the caller the job did not run (or was rolled back unrun).
    fn fail(self: Box<Self>, error: StoreError);
}

struct Queued {
    weight: usize,
    job: Box<dyn WriteJob>,
}

#[derive(Default)]
struct State {
    /// Waiting jobs per user ("" for the server's own bookkeeping).
    users: HashMap<String, VecDeque<Queued>>,
    /// Users waiting for a turn, in order. A user being served in the
    /// current group is not here; it rejoins at the back after the commit.
    ring: VecDeque<String>,
    len: usize,
    closed: bool,
}

/// The bounded, per-user fair queue between request handlers and the writer.
pub(super) struct Queue {
    state: Mutex<State>,
    ready: Condvar,
    capacity: usize,
    per_user: usize,
    #[cfg(test)]
    pub faults: faults::Faults,
}

/// Jobs taken for one transaction, and the users to put back in line after it.
pub(super) struct Group {
    jobs: Vec<Box<dyn WriteJob>>,
    rejoin: Vec<String>,
}

impl Queue {
    /// `capacity` jobs in all; one user may hold an eighth of them (at least one).
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State::default()),
            ready: Condvar::new(),
            capacity: capacity.max(1),
            per_user: (capacity / 8).max(1),
            #[cfg(test)]
            faults: faults::Faults::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a job for `user`; refuses at once when the queue (or the
    /// user's share of it) is full, so nothing waits without bound.
    pub fn push(&self, user: &str, weight: usize, job: Box<dyn WriteJob>) -> Result<(), StoreError> {
        let mut st = self.lock();
        if st.closed {
            return Err(StoreError::closed());
        }
        if st.len >= self.capacity {
            return Err(full());
        }
        let waiting = st.users.get(user).map_or(0, VecDeque::len);
        if waiting >= self.per_user {
            return Err(full());
        }
        if waiting == 0 && !st.users.contains_key(user) {
            st.ring.push_back(user.to_string());
        }
        st.users.entry(user.to_string()).or_default().push_back(Queued { weight: weight.max(1), job });
        st.len += 1;
        drop(st);
        self.ready.notify_one();
        Ok(())
    }

    /// Jobs waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len
    }

    /// No more jobs are accepted; the writer finishes those queued, then stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Blocks until there is work; `None` once closed and drained.
    fn take_group(&self) -> Option<Group> {
        let mut st = self.lock();
        while st.len == 0 {
            if st.closed {
                return None;
            }
            st = self.ready.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        let mut jobs = Vec::new();
        let mut weight = 0usize;
        // Users served in this group that still have jobs, in serving order.
        let mut served: VecDeque<String> = VecDeque::new();
        while jobs.len() < MAX_GROUP {
            let (user, from_ring) = match st.ring.pop_front() {
                Some(u) => (u, true),
                None => match served.pop_front() {
                    Some(u) => (u, false),
                    None => break,
                },
            };
            let Some(waiting) = st.users.get_mut(&user) else { continue };
            let next_weight = waiting.front().map_or(0, |q| q.weight);
            if !jobs.is_empty() && weight + next_weight > MAX_GROUP_WEIGHT {
                if from_ring {
                    st.ring.push_front(user);
                } else {
                    served.push_front(user);
                }
                break;
            }
            let Some(queued) = waiting.pop_front() else { continue };
            let emptied = waiting.is_empty();
            st.len -= 1;
            weight += queued.weight;
            jobs.push(queued.job);
            if emptied {
                st.users.remove(&user);
            } else {
                served.push_back(user);
            }
        }
        Some(Group { jobs, rejoin: served.into() })
    }

    /// Puts the users served in a group back at the end of the line.
    fn rejoin(&self, users: Vec<String>) {
        let mut st = self.lock();
        for user in users {
            if st.users.contains_key(&user) {
                st.ring.push_back(user);
            }
        }
    }
}

fn full() -> StoreError {
    StoreError::Unavailable("too many writes are waiting (database.write_queue)".into())
}

/// The writer thread's loop: one group, one transaction, until closed;
/// `checkpoints` hears of every commit.
pub(super) fn run(conn: Connection, queue: &Queue, checkpoints: Checkpointer) {
    while let Some(group) = queue.take_group() {
        run_group(&conn, queue, group.jobs);
        checkpoints.committed();
        queue.rejoin(group.rejoin);
    }
    drop(checkpoints);
    // The store is closing. Dropping `conn` checkpoints the WAL.
    let _ = conn.execute_batch("PRAGMA optimize");
}

/// An error to hand to several callers (`StoreError` is not `Clone`).
fn failure(e: &StoreError) -> StoreError {
    match e {
        StoreError::Busy => StoreError::Busy,
        other => StoreError::Other(other.to_string()),
    }
}

fn begin(conn: &Connection, queue: &Queue) -> Result<(), StoreError> {
    queue.inject(Point::Begin)?;
    conn.execute_batch("BEGIN IMMEDIATE").map_err(|e| {
        let e = StoreError::from(e);
        tracing::error!(error = %e, "cannot begin write transaction");
        e
    })
}

/// Fails every job finished so far in a transaction that did not survive.
fn fail_all(finished: &mut Vec<Finish>, why: &str) {
    for finish in finished.drain(..) {
        finish(Err(StoreError::Other(why.into())));
    }
}

fn run_group(conn: &Connection, queue: &Queue, jobs: Vec<Box<dyn WriteJob>>) {
    let mut open = begin(conn, queue);
    let mut finished: Vec<Finish> = Vec::with_capacity(jobs.len());
    for job in jobs {
        // Never run a job outside a transaction: it would commit row by row.
        if let Err(e) = &open {
            job.fail(failure(e));
            continue;
        }
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            tracing::error!(error = %e, "cannot open savepoint");
            job.fail(StoreError::from(e));
        } else {
            match std::panic::catch_unwind(AssertUnwindSafe(|| job.run(conn))) {
                Ok(ran) => {
                    let end = if ran.keep { "RELEASE job" } else { "ROLLBACK TO job; RELEASE job" };
                    match queue.inject(Point::CloseSavepoint).and_then(|()| Ok(conn.execute_batch(end)?)) {
                        Ok(()) => finished.push(ran.finish),
                        Err(e) => {
                            // What the job left behind is unknown: give up the whole transaction.
                            tracing::error!(error = %e, "cannot close savepoint; rolling the group back");
                            let _ = conn.execute_batch("ROLLBACK");
                            fail_all(&mut finished, "the transaction was rolled back");
                            (ran.finish)(Err(failure(&e)));
                            open = begin(conn, queue);
                            continue;
                        }
                    }
                }
                Err(_) => {
                    // The job's caller learns of it from its dropped channel.
                    tracing::error!("a write job panicked; its changes were rolled back");
                    if conn.execute_batch("ROLLBACK TO job; RELEASE job").is_err() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                }
            }
        }
        if queue.inject(Point::AfterJob).is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        // Some errors (disk full, I/O) make SQLite roll back the whole
        // transaction: the jobs before this point are lost. Tell their
        // callers, and run nothing more until a fresh transaction is open.
        if conn.is_autocommit() {
            tracing::error!("the write transaction was rolled back by SQLite; failing the jobs in it");
            fail_all(&mut finished, "the transaction was rolled back");
            open = begin(conn, queue);
        }
    }
    if open.is_err() {
        return;
    }
    let committed = queue.inject(Point::Commit).and_then(|()| Ok(conn.execute_batch("COMMIT")?));
    if let Err(e) = &committed {
        tracing::error!(error = %e, "commit failed; the whole group was rolled back");
        let _ = conn.execute_batch("ROLLBACK");
    }
    for finish in finished {
        finish(committed.as_ref().map(|_| ()).map_err(failure));
    }
}

/// Where the writer can be made to fail in tests.
#[derive(Clone, Copy, Debug)]
pub(super) enum Point {
    Begin,
    CloseSavepoint,
    AfterJob,
    Commit,
}

impl Queue {
    #[cfg(not(test))]
    #[inline(always)]
    fn inject(&self, _point: Point) -> Result<(), StoreError> {
        Ok(())
    }

    #[cfg(test)]
    fn inject(&self, point: Point) -> Result<(), StoreError> {
        self.faults.hit(point)
    }
}

#[cfg(test)]
pub(super) mod faults {
    //! Fault injection for the writer's tests: each point lets `skip` hits
    //! pass, then fails the next `fail` hits.

    use std::sync::Mutex;

    use super::{Point, StoreError};

    #[derive(Default)]
    pub struct Faults {
        /// (skip, fail) per point, indexed by `Point as usize`.
        armed: Mutex<[(u32, u32); 4]>,
    }

    impl Faults {
        pub fn arm(&self, point: Point, skip: u32, fail: u32) {
            self.armed.lock().unwrap_or_else(|p| p.into_inner())[point as usize] = (skip, fail);
        }

        pub(super) fn hit(&self, point: Point) -> Result<(), StoreError> {
            let mut armed = self.armed.lock().unwrap_or_else(|p| p.into_inner());
            let (skip, fail) = &mut armed[point as usize];
            if *skip > 0 {
                *skip -= 1;
            } else if *fail > 0 {
                *fail -= 1;
                return Err(StoreError::Other(format!("injected fault at {point:?}")));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A job that only says whose it is when run.
    struct Tagged(String, Arc<Mutex<Vec<String>>>);

    impl WriteJob for Tagged {
        fn run(self: Box<Self>, _conn: &Connection) -> Ran {
            self.1.lock().unwrap_or_else(|p| p.into_inner()).push(self.0.clone());
            Ran { keep: true, finish: Box::new(|_| {}) }
        }
        fn fail(self: Box<Self>, _error: StoreError) {}
    }

    fn push(queue: &Queue, user: &str, tag: &str, weight: usize, log: &Arc<Mutex<Vec<String>>>) {
        queue.push(user, weight, Box::new(Tagged(tag.into(), log.clone()))).expect("queued");
    }

    /// Runs a group's jobs (they only log their tags) and returns the tags in order.
    fn run(group: Group, log: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
        let conn = Connection::open_in_memory().expect("in-memory db");
        for job in group.jobs {
            let _ = job.run(&conn);
        }
        std::mem::take(&mut *log.lock().unwrap_or_else(|p| p.into_inner()))
    }

    #[test]
    fn a_small_push_never_waits_behind_another_users_queue() {
        let queue = Queue::new(1024);
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..3 {
            push(&queue, "big", &format!("big{i}"), 5_000, &log);
        }
        let group = queue.take_group().expect("work");
        let rejoin = group.rejoin.clone();
        assert_eq!(run(group, &log), ["big0"], "a large job runs in a group of its own");
        // A small push arrives while big0 runs: it goes next, alone.
        push(&queue, "small", "small0", 1, &log);
        queue.rejoin(rejoin);
        let group = queue.take_group().expect("work");
        let rejoin = group.rejoin.clone();
        assert_eq!(run(group, &log), ["small0"]);
        queue.rejoin(rejoin);
        let group = queue.take_group().expect("work");
        assert_eq!(run(group, &log), ["big1"]);
    }

    #[test]
    fn small_jobs_still_commit_together_in_turns() {
        let queue = Queue::new(1024);
        let log = Arc::new(Mutex::new(Vec::new()));
        for i in 0..5 {
            push(&queue, "a", &format!("a{i}"), 1, &log);
        }
        for i in 0..2 {
            push(&queue, "b", &format!("b{i}"), 1, &log);
        }
        let group = queue.take_group().expect("work");
        assert_eq!(run(group, &log), ["a0", "b0", "a1", "b1", "a2", "a3", "a4"]);
        assert_eq!(queue.len(), 0);
    }
}
