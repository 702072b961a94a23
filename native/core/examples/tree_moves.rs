//! Times `TreeState::move_local` alone: 10,000 nodes, 100,000 random moves
//! (the workload of benchmarks/bench_tree.py). `cargo run --release --example tree_moves`
use crdtsync_core::tree::{TreeState, ROOT};
use std::time::Instant;

fn main() {
    let mut seed: u64 = 1;
    let mut rnd = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for rep in 0..4 {
        let index = if rep % 2 == 0 { None } else { Some(0) };
        let mut st = TreeState::new();
        let n_nodes = 10_000u64;
        let mut ids = Vec::new();
        for i in 0..n_nodes {
            let p = if i == 0 || rnd(10) == 0 {
                ROOT
            } else {
                ids[rnd(i) as usize]
            };
            let t = u128::from(i + 1) << 64 | 1;
            let plan = st.key_for(p, None, None, t, t);
            let k = match plan {
                crdtsync_core::tree::Plan::Key(k) => k,
                _ => "a0".to_string(),
            };
            st.apply_local(t, t, p, k, true);
            ids.push(t);
        }
        let moves: Vec<(u128, u128)> = (0..100_000)
            .map(|_| {
                let n = ids[rnd(n_nodes) as usize];
                let p = if rnd(20) == 0 {
                    ROOT
                } else {
                    ids[rnd(n_nodes) as usize]
                };
                (n, p)
            })
            .collect();
        let t0 = Instant::now();
        let mut ok = 0;
        let mut entry = String::new();
        for (n, p) in &moves {
            if st.move_local(*n, *p, index, 1, &mut entry).is_ok() {
                ok += 1;
            }
        }
        let dt = t0.elapsed();
        println!(
            "index {index:?}: {:.3} us per move ({ok} ok)",
            dt.as_secs_f64() * 1e6 / moves.len() as f64
        );
    }
}
