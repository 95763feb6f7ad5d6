"""benchmarks/kv_cache.py: the table of cache bytes per token, on the tiny size."""

from benchmarks import kv_cache


def test_the_table_measures_each_variant_against_standard(capsys):
    assert kv_cache.main(["--sizes", "tiny", "--prompt-tokens", "4", "--ra-heads", "2"]) == 0
    rows = {line.split(" | ")[1]: line.split(" | ") for line in capsys.readouterr().out.splitlines()
            if line.startswith("| tiny")}
    # tiny: 2 layers, width 64, float32: k and v 1024 bytes; latent 32 -> 256; 2 RA heads' queries (2 x 16) -> +256
    assert {name: (row[3], row[4]) for name, row in rows.items()} == {
        "standard": ("1,024", "1.000x"), "mla, latent 32": ("256", "0.250x"),
        "ra (2 heads)": ("1,280", "1.250x"), "mla + ra (2 heads), latent 32": ("512", "0.500x")}
    assert all(float(row[5].rstrip(" |")) < 1e-5 for row in rows.values())
