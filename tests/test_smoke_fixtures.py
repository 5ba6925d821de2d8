import psycopg


def test_dsn_fixture_gives_isolated_database_with_pgvector(dsn):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        assert conn.execute("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector").fetchone()[0] == 1.0


def test_tiny_model_encodes(tiny_model_dir):
    from embedops import modelzoo

    model = modelzoo.load(str(tiny_model_dir), device="cpu")
    emb = model.encode(["hello world", "another text"])
    assert emb.shape == (2, 32)
