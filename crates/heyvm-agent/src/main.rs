//! `heyvm-agent`: the static agent binary placed inside every sandbox.
//! `heyvm-agent --listen-fd N` (an inherited listening socket) or
//! `heyvm-agent --port PATH` (a virtio-serial port).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(heyvm_agent::main_with_args(&args));
}
