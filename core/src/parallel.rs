//! Index-parallel map over a fixed number of worker threads, each with its own state (a
//! tract session, a decoder buffer), results in input order, stopping at the first error.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `f(&mut state, i)` for `i in 0..n` on up to `workers` threads; `init` builds one
/// state per thread. Returns the results in index order or the first error met.
pub fn map_indexed<S, T: Send, E: Send>(
    n: usize,
    workers: usize,
    init: impl Fn() -> Result<S, E> + Sync,
    f: impl Fn(&mut S, usize) -> Result<T, E> + Sync,
) -> Result<Vec<T>, E> {
    let next = AtomicUsize::new(0);
    let slots: Mutex<Vec<Option<T>>> = Mutex::new((0..n).map(|_| None).collect());
    let first_err: Mutex<Option<E>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers.max(1).min(n.max(1)) {
            s.spawn(|| {
                let mut state = match init() {
                    Ok(s) => s,
                    Err(e) => {
                        first_err.lock().unwrap().get_or_insert(e);
                        return;
                    }
                };
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n || first_err.lock().unwrap().is_some() {
                        break;
                    }
                    match f(&mut state, i) {
                        Ok(v) => slots.lock().unwrap()[i] = Some(v),
                        Err(e) => {
                            first_err.lock().unwrap().get_or_insert(e);
                            break;
                        }
                    }
                }
            });
        }
    });
    if let Some(e) = first_err.into_inner().unwrap() {
        return Err(e);
    }
    Ok(slots.into_inner().unwrap().into_iter().map(|v| v.expect("every index ran")).collect())
}

/// Worker threads to use by default: the machine's cores.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_stops_on_error() {
        let v: Result<Vec<usize>, String> = map_indexed(100, 3, || Ok(()), |_, i| Ok(i * 2));
        assert_eq!(v.unwrap(), (0..100).map(|i| i * 2).collect::<Vec<_>>());
        let e: Result<Vec<usize>, String> =
            map_indexed(100, 2, || Ok(()), |_, i| if i == 37 { Err(format!("bad {i}")) } else { Ok(i) });
        assert_eq!(e.unwrap_err(), "bad 37");
        let empty: Result<Vec<u8>, String> = map_indexed(0, 4, || Ok(()), |_, _| Ok(1));
        assert!(empty.unwrap().is_empty());
    }
}
