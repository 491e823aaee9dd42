"""AIFlow's python demo: one PythonProcessor that prints a greeting."""

from aiflowd import ExecutionContext, PythonProcessor, job_config, user_define_operation


class PrintHelloWorld(PythonProcessor):
    def process(self, execution_context: ExecutionContext, input_list: list) -> list:
        print("Hello World!")
        return []


def main():
    # AIFlow definitions declare their jobs in main(); aiflowd calls it when the module does not.
    with job_config("job_1"):
        user_define_operation(processor=PrintHelloWorld())


if __name__ == "__main__":
    main()
