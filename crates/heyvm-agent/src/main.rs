//! `heyvm-agent`: the static agent binary placed inside every sandbox.
//! `heyvm-agent --listen-fd N` (an inherited listening socket) or
//! `heyvm-agent --port PATH` (a virtio-serial port). As `/init` of a
//! microVM's initramfs it first does the init's work (see `guest_init`).

fn main() {
    if heyvm_agent::guest_init::is_guest_init() {
        heyvm_agent::guest_init::main(|port| heyvm_agent::run(heyvm_agent::Source::Stream(port.into())));
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(heyvm_agent::main_with_args(&args));
}
