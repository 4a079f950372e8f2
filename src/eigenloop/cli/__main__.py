from eigenloop.cli.main import app

app(prog_name="eigenloop")
