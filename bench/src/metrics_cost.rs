//! What one request-duration observation costs: Accord's hand-written
//! histograms (fixed route index, relaxed atomics) against `prometheus-client`'s
//! labelled `Family<…, Histogram>`, in the same run.

use std::time::Instant;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

pub fn compare(observations: usize) {
    let routes = ["/api/sync/push", "/api/sync/pull", "/api/sync/events", "/healthz"];
    let ours = accord::metrics::Metrics::default();
    let started = Instant::now();
    for i in 0..observations {
        ours.request(routes[i % routes.len()], (i % 1000) as f64 * 1e-5);
    }
    let hand_written = started.elapsed().as_nanos() as f64 / observations as f64;

    let family = Family::<Vec<(String, String)>, Histogram>::new_with_constructor(|| {
        Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0])
    });
    let started = Instant::now();
    for i in 0..observations {
        // What a request path does: build the label set, look it up, observe.
        let labels = vec![("route".to_string(), routes[i % routes.len()].to_string())];
        family.get_or_create(&labels).observe((i % 1000) as f64 * 1e-5);
    }
    let library = started.elapsed().as_nanos() as f64 / observations as f64;
    println!(
        "metrics: one request-duration observation, {observations} of them on one thread: \
         hand-written {hand_written:.1} ns, prometheus-client Family<route, Histogram> {library:.1} ns"
    );
}
