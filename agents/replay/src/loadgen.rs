//! `pas loadgen`: burns CPU to follow a trace's profile, the part `stress-ng`
//! played in the older system. Each of `cores` threads runs a duty cycle in
//! slices of 100 ms: busy for `cpu / 100 × scale` of the slice, asleep for
//! the rest, so the container's CPU use follows the trace (as a share of
//! `cores` cores). Trace time runs `speed` times faster than the wall clock.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::Error;

/// A load generator.
#[derive(Debug, Clone)]
pub struct Config {
    /// Threads, each burning up to one core.
    pub cores: usize,
    /// Trace time runs this many times faster than the wall clock.
    pub speed: f64,
    /// Multiplies every value (2 = twice the trace's load).
    pub scale: f64,
    /// Start again at the end.
    pub repeat: bool,
    /// Length of one duty cycle.
    pub slice: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cores: 1,
            speed: 1.0,
            scale: 1.0,
            repeat: false,
            slice: Duration::from_millis(100),
        }
    }
}

/// The duty cycle (0–1) at `elapsed` wall time into the profile, or `None`
/// from `length` on (the last value holds for one interval).
pub fn duty_at(points: &[(f64, f64)], elapsed: f64, length: f64) -> Option<f64> {
    if elapsed >= length {
        return None;
    }
    let i = points.partition_point(|(t, _)| *t <= elapsed);
    points.get(i.saturating_sub(1)).map(|p| p.1)
}

/// Follows the trace at `path` until it ends (or forever with `repeat`)
/// or `stop` is set; reports the current duty cycle every second.
pub fn run(
    path: &Path,
    config: &Config,
    stop: Arc<AtomicBool>,
    report: &mut dyn FnMut(f64, f64),
) -> Result<(), Error> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    let points =
        pas_schemas::trace::parse(&text).map_err(|e| Error::Input(format!("{}: {e}", path.display())))?;
    let positive = config.speed > 0.0 && config.speed.is_finite();
    if config.cores == 0 || !positive || config.scale.is_nan() || config.scale < 0.0 {
        return Err(Error::Input(
            "cores must be at least 1, speed above 0 and scale at least 0".into(),
        ));
    }
    let t0 = points[0].0;
    // (wall seconds from the start, duty 0–1)
    let profile: Vec<(f64, f64)> = points
        .iter()
        .map(|(t, cpu)| {
            (
                (*t - t0).as_seconds_f64() / config.speed,
                (cpu / 100.0 * config.scale).clamp(0.0, 1.0),
            )
        })
        .collect();
    let length = profile.last().map_or(0.0, |p| p.0)
        + if profile.len() > 1 {
            profile[1].0 - profile[0].0
        } else {
            1.0
        };
    // Duty in millionths, shared with the workers.
    let duty = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..config.cores)
        .map(|_| {
            let (duty, stop, slice) = (duty.clone(), stop.clone(), config.slice);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let d = duty.load(Ordering::Relaxed) as f64 / 1e6;
                    let start = Instant::now();
                    let busy = slice.mul_f64(d);
                    let mut x = 0u64;
                    while start.elapsed() < busy {
                        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                    }
                    std::thread::sleep(slice.saturating_sub(start.elapsed()));
                }
            })
        })
        .collect();
    let started = Instant::now();
    let mut next_report = 0.0;
    while !stop.load(Ordering::Relaxed) {
        let mut elapsed = started.elapsed().as_secs_f64();
        if config.repeat && length > 0.0 {
            elapsed %= length;
        }
        let Some(d) = duty_at(&profile, elapsed, length) else {
            break;
        };
        duty.store((d * 1e6) as u64, Ordering::Relaxed);
        let wall = started.elapsed().as_secs_f64();
        if wall >= next_report {
            report(wall, d);
            next_report = wall.floor() + 1.0;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_duty_follows_the_profile_and_ends_with_it() {
        let p = [(0.0, 0.1), (5.0, 0.5), (10.0, 0.9)];
        assert_eq!(duty_at(&p, 0.0, 15.0), Some(0.1));
        assert_eq!(duty_at(&p, 4.9, 15.0), Some(0.1));
        assert_eq!(duty_at(&p, 5.0, 15.0), Some(0.5));
        assert_eq!(duty_at(&p, 14.9, 15.0), Some(0.9));
        assert_eq!(duty_at(&p, 15.0, 15.0), None);
    }

    #[test]
    fn it_burns_about_the_duty_it_is_given() {
        // Half a core for 2 s: this process's CPU time rises by about 1 s.
        // Wide bounds: other tests share the cores (the exact figure is not
        // the point; that the burner neither idles nor spins flat out is).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.csv");
        std::fs::write(
            &path,
            "timestamp,cpu\n2020-01-01T00:00:00Z,50\n2020-01-01T00:00:01Z,50\n",
        )
        .unwrap();
        let cpu = || {
            let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
            let f: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
            (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0
        };
        let before = cpu();
        let started = Instant::now();
        run(
            &path,
            &Config::default(),
            Arc::new(AtomicBool::new(false)),
            &mut |_, _| {},
        )
        .unwrap();
        let wall = started.elapsed().as_secs_f64();
        let used = cpu() - before;
        assert!(
            (1.8..3.0).contains(&wall),
            "two points a second apart run ~2 s, took {wall}"
        );
        assert!(
            used > 0.15 * wall && used < 0.85 * wall,
            "half a core for {wall:.2}s used {used:.2}s of CPU"
        );
    }
}
