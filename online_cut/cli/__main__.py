from online_cut.cli import app

app()
