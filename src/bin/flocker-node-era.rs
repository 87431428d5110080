//! `flocker-node-era`: print this machine's era (its kernel boot id), as Flocker's tool
//! did. A process on a node retries `GET /v1/state/nodes/by_era/<era>` until it learns its
//! node UUID (Flocker's Docker plugin does exactly this).

fn main() {
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(era) => println!("{}", era.trim()),
        Err(e) => {
            eprintln!("Error: cannot read /proc/sys/kernel/random/boot_id: {e}");
            std::process::exit(1);
        }
    }
}
