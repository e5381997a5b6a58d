//! Running the same work on several devices at once, one thread per device: the data-parallel
//! fan-out that training and evaluation share.

use burn::tensor::Device;

/// Runs `work(d, device)` for every device, each in a thread of its own (one device runs
/// in this thread), and returns the results in device order; a panic in one is raised here.
pub fn on_each_device<T: Send>(
    devices: &[Device],
    work: impl Fn(usize, &Device) -> T + Sync,
) -> Vec<T> {
    if let [device] = devices {
        return vec![work(0, device)];
    }
    std::thread::scope(|scope| {
        let workers: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(d, device)| {
                let work = &work;
                scope.spawn(move || work(d, device))
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|e| std::panic::resume_unwind(e))
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results come back in device order, from one thread or several.
    #[test]
    fn results_come_back_in_device_order() {
        let cpu = crate::parse_device("cpu").unwrap();
        assert_eq!(
            on_each_device(std::slice::from_ref(&cpu), |d, _| d),
            vec![0]
        );
        let devices = vec![cpu; 3];
        assert_eq!(on_each_device(&devices, |d, _| d * 10), vec![0, 10, 20]);
    }
}
