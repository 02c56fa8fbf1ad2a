from docktor.cli import entry

entry()
