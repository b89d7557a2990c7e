//! `paddock-agent code-server`: the code interpreter server (`paddock-interpreter`), run
//! inside a sandbox by a template's start command. Not part of PID 1: it is an ordinary
//! process of the sandbox, started as the template's user, and its kernels are its children.

/// Parses `[--port N] [--cwd DIR] [--no-prestart]` and serves until SIGTERM or SIGINT, then
/// kills its kernels and exits 0.
pub fn main(args: Vec<String>) -> ! {
    let mut port = paddock_interpreter::PORT;
    let mut opts = paddock_interpreter::Options::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => match it.next().and_then(|p| p.parse().ok()) {
                Some(p) => port = p,
                None => usage("--port needs a port number"),
            },
            "--cwd" => match it.next() {
                Some(d) if d.starts_with('/') => opts.default_cwd = d,
                _ => usage("--cwd needs an absolute directory"),
            },
            "--no-prestart" => opts.prestart_python = false,
            other => usage(&format!("unknown argument {other:?}")),
        }
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("paddock-agent code-server: {e}");
            std::process::exit(1)
        }
    };
    let served = rt.block_on(paddock_interpreter::serve(port, opts));
    // Dropping the runtime drops every context's kernel handle, which kills the kernel:
    // `exit` alone would leave them running.
    drop(rt);
    match served {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("paddock-agent code-server: {e}");
            std::process::exit(1)
        }
    }
}

fn usage(msg: &str) -> ! {
    eprintln!(
        "paddock-agent code-server: {msg}\nusage: paddock-agent code-server [--port 49999] [--cwd DIR] [--no-prestart]"
    );
    std::process::exit(2)
}
