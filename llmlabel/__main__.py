from llmlabel.cli.main import console

console()
