from surd.cli.main import main

main()
