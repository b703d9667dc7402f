//! `vote`: the CATS v DOGS server. Listens on `PORT` (default 8080); see the crate docs and
//! `docs/vote.md` for the environment it reads. Must not: hold logic (it is all in the
//! library, where the tests reach it).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gatehouse_vote::run_from_env().await
}
