from docktor.cli.main import entry

entry()
