from llmlabel.cli.main.main import console

console()
