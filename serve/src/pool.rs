//! The inference workers: K OS threads, each keeping one tract state per model version, fed
//! from one queue. Admission is per model (its `in_flight` count against the queue limit), so
//! one flooded model sheds its own load with 503s instead of growing memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fieldkit_runtime::{PredictOptions, Prediction, RuntimeError, Session};
use tokio::sync::oneshot;

use crate::error::ServeError;
use crate::registry::Model;

pub enum Input {
    /// Encoded JPEG/PNG, decoded and preprocessed with the model's card.
    Image(Vec<u8>, PredictOptions),
    /// An already preprocessed `[3, H, W]` tensor (KServe v2 infer).
    Tensor(Vec<f32>),
}

pub enum Output {
    Prediction(Prediction),
    Tensor(Vec<f32>),
}

pub struct Done {
    pub output: Output,
    pub queue_s: f64,
    pub run_s: f64,
}

struct Job {
    model: Arc<Model>,
    input: Input,
    enqueued: Instant,
    deadline: Instant,
    reply: oneshot::Sender<Result<Done, ServeError>>,
}

pub struct Pool {
    tx: Mutex<Option<Sender<Job>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    /// Busy time per worker, µs (for the busy ratio).
    pub busy_us: Vec<Arc<AtomicU64>>,
    pub started: Instant,
    queue: usize,
}

/// Gives the admission slot back however the request ends.
struct Slot(Arc<Model>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Pool {
    pub fn new(workers: usize, queue: usize) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::new();
        let mut busy_us = Vec::new();
        for i in 0..workers {
            let rx = rx.clone();
            let busy = Arc::new(AtomicU64::new(0));
            busy_us.push(busy.clone());
            let h = std::thread::Builder::new()
                .name(format!("infer-{i}"))
                .spawn(move || worker(rx, busy))
                .expect("spawning an inference thread");
            handles.push(h);
        }
        Pool { tx: Mutex::new(Some(tx)), handles: Mutex::new(handles), busy_us, started: Instant::now(), queue }
    }

    /// Queues a request for `model`, or refuses it at once when the model's queue is full.
    pub fn submit(
        &self,
        model: Arc<Model>,
        input: Input,
        timeout: Duration,
    ) -> Result<oneshot::Receiver<Result<Done, ServeError>>, ServeError> {
        let before = model.in_flight.fetch_add(1, Ordering::AcqRel);
        if before >= self.queue {
            model.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(ServeError::Busy(model.name.clone(), before));
        }
        let (reply, rx) = oneshot::channel();
        let now = Instant::now();
        let job = Job { model, input, enqueued: now, deadline: now + timeout, reply };
        let tx = self.tx.lock().expect("pool lock");
        match tx.as_ref() {
            Some(tx) => tx.send(job).map_err(|e| {
                let _slot = Slot(e.0.model);
                ServeError::Internal("inference workers stopped".into())
            })?,
            None => {
                let _slot = Slot(job.model);
                return Err(ServeError::Internal("shutting down".into()));
            }
        }
        Ok(rx)
    }

    /// Stops taking work; each worker finishes the queue, then exits. Blocking.
    pub fn shutdown(&self) {
        self.tx.lock().expect("pool lock").take();
        for h in self.handles.lock().expect("pool lock").drain(..) {
            let _ = h.join();
        }
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>, busy: Arc<AtomicU64>) {
    // One tract state per model name; the weak handle tells a swapped or removed model.
    let mut sessions: HashMap<String, (Weak<Model>, u64, Session)> = HashMap::new();
    loop {
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        sessions.retain(|_, (m, _, _)| m.strong_count() > 0);
        let started = Instant::now();
        let slot = Slot(job.model.clone());
        let queue_s = started.duration_since(job.enqueued).as_secs_f64();
        let result = if started > job.deadline {
            Err(ServeError::Timeout((job.deadline - job.enqueued).as_millis() as u64))
        } else {
            run(&mut sessions, &job.model, job.input).map(|output| Done {
                output,
                queue_s,
                run_s: started.elapsed().as_secs_f64(),
            })
        };
        busy.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        drop(slot);
        let _ = job.reply.send(result);
    }
}

fn run(
    sessions: &mut HashMap<String, (Weak<Model>, u64, Session)>,
    model: &Arc<Model>,
    input: Input,
) -> Result<Output, ServeError> {
    let stale = sessions.get(&model.name).is_none_or(|(_, v, _)| *v != model.version);
    if stale {
        let s = model.engine.session().map_err(|e| ServeError::Internal(fieldkit_core::error::chain(&e)))?;
        sessions.insert(model.name.clone(), (Arc::downgrade(model), model.version, s));
    }
    let (_, _, session) = sessions.get_mut(&model.name).expect("inserted above");
    let result = match input {
        Input::Image(bytes, opts) => session.predict_bytes(&bytes, &opts).map(Output::Prediction),
        Input::Tensor(chw) => session.run_tensor(&chw).map(Output::Tensor),
    };
    result.map_err(|e| match e {
        // An undecodable image is the client's fault; the message says what is wrong with it.
        RuntimeError::Core(_) => ServeError::BadRequest(fieldkit_core::error::chain(&e)),
        e => ServeError::Internal(fieldkit_core::error::chain(&e)),
    })
}
