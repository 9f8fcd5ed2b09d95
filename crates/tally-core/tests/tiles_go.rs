//! Go's `golang.org/x/mod/sumdb/tlog`, the reference implementation of
//! tiled logs, reads a tree that [`TileEdge`] wrote as C2SP tiles: it
//! checks every tile against the root, every bundled entry against its
//! leaf, and its own inclusion and consistency proofs, which must equal
//! ours from [`TileSubtrees`].

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use tally_core::tiles::{TileEdge, TileError, TileId, TileSubtrees};

fn hex(h: &[u8]) -> String {
    h.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn go_sumdb_tlog_reads_our_tiles_and_agrees_on_proofs() {
    let gopath = std::env::var("TALLY_GOPATH").unwrap_or_else(|_| "/usr/share/gocode".into());
    let have_go = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success())
        && Path::new(&gopath)
            .join("src/golang.org/x/mod/sumdb/tlog")
            .exists();
    if !have_go {
        tally_testkit::skip("go and golang.org/x/mod are not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("tally-tiles-go-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // 70,000 entries of uneven lengths: three tile levels, partial tiles
    // at each, and a partial bundle.
    let size = 70_000u64;
    let mut edge = TileEdge::new();
    let mut tiles = BTreeMap::new();
    let mut done = Vec::new();
    for i in 0..size {
        let entry = format!("record {i} {}", "x".repeat((i % 97) as usize));
        edge.append(entry.as_bytes(), &mut done).unwrap();
        tiles.extend(done.drain(..).map(|t| (t.id, t.data)));
    }
    tiles.extend(edge.partials().into_iter().map(|t| (t.id, t.data)));
    for (id, data) in &tiles {
        let path = dir.join(id.path());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, data).unwrap();
    }
    let root = edge.root();
    let read = |id: TileId| tiles.get(&id).cloned().ok_or(TileError::Missing(id.path()));
    let mut ours = TileSubtrees::new(read, size);
    assert_eq!(ours.root().unwrap(), root);
    let inclusions = [0u64, 1, 255, 256, 65_535, 65_536, 69_999];
    let olds = [1u64, 2, 255, 256, 257, 65_536, 69_000, 70_000];
    let mut requests = String::new();
    for i in inclusions {
        requests.push_str(&format!("inclusion {i}\n"));
    }
    for o in olds {
        requests.push_str(&format!("consistency {o}\n"));
    }

    let main_go = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tools/tilecheck/main.go");
    let tilecheck = |requests: &str| {
        let mut child = Command::new("go")
            .args(["run", main_go])
            .arg(&dir)
            .arg(size.to_string())
            .arg(hex(&root))
            .env("GO111MODULE", "off")
            .env("GOPATH", &gopath)
            .env("GOFLAGS", "")
            .env("GOPROXY", "off")
            .env("GOCACHE", dir.join("gocache"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(requests.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let out = tilecheck(&requests);
    assert!(
        out.status.success(),
        "Go refused our tiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), inclusions.len() + olds.len(), "{stdout}");
    for (i, line) in inclusions.iter().zip(&lines) {
        let proof: Vec<String> = ours
            .inclusion_proof(*i)
            .unwrap()
            .iter()
            .map(|h| hex(h))
            .collect();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            proof,
            "inclusion {i}"
        );
    }
    let mut tree = tally_core::merkle::MerkleTree::new();
    for i in 0..size {
        let entry = format!("record {i} {}", "x".repeat((i % 97) as usize));
        tree.push(tally_core::merkle::leaf_hash(entry.as_bytes()));
    }
    for (o, line) in olds.iter().zip(&lines[inclusions.len()..]) {
        let mut f = line.split_whitespace();
        assert_eq!(f.next(), Some("root"));
        assert_eq!(
            f.next(),
            Some(hex(&tree.root_at(*o).unwrap()).as_str()),
            "root of {o}"
        );
        let proof: Vec<String> = ours
            .consistency_proof(*o)
            .unwrap()
            .iter()
            .map(|h| hex(h))
            .collect();
        assert_eq!(f.collect::<Vec<_>>(), proof, "consistency from {o}");
    }
    // One flipped bit in a full tile: Go must refuse the tree.
    let victim = dir.join("tile/0/100");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let bad = tilecheck("inclusion 25700\n");
    assert!(!bad.status.success(), "Go accepted a tampered tile");
    let _ = std::fs::remove_dir_all(&dir);
}
